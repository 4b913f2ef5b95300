"""The import contracts in `.importlinter` (layers, forbidden imports) hold for this tree."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_keep_the_layers_and_the_forbidden_contracts() -> None:
    """`lint-imports` from the repository root, on this checkout's `fleetstream`."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                               "sys.exit(lint_imports(config_filename='.importlinter'))"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    assert result.returncode == 0, f"import contracts broken:\n{result.stdout}\n{result.stderr}"
