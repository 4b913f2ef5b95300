"""Python virtual environments of the local servers, under `$FLEETSTREAM_HOME/venvs/`.

Some servers need Python packages that must not enter the project's own
environment (PyFlink's wheels pin an old apache-beam; the SDK workers run the
apache-beam version of the Java job server). Each gets a venv of its own.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

from fleetstream.dev.service import ServiceError, home


def venv(name: str, requirements: Sequence[str], no_deps: bool = False) -> Path:
    """The folder of venv `name` with `requirements` installed (once; fast afterwards)."""
    folder = home() / "venvs" / name
    wanted = "\n".join([*requirements, f"no_deps={no_deps}"])
    done = folder / "fleetstream-installed.txt"
    if done.exists() and done.read_text() == wanted:
        return folder
    steps = [[sys.executable, "-m", "venv", str(folder)],
             [str(folder / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
              *(["--no-deps"] if no_deps else []), *requirements]]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"could not set up the venv {folder} "
                               f"({' '.join(step)}):\n{(result.stdout + result.stderr)[-2000:]}")
    done.write_text(wanted)
    return folder


def site_packages(folder: Path) -> Path:
    """The site-packages folder of a venv."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return folder / "lib" / version / "site-packages"
