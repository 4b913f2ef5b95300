"""Print a benchmark's Markdown lines and, when asked, append them to a results file."""
from __future__ import annotations

from typing import Sequence


def publish(lines: Sequence[str], append_to: str | None) -> None:
    """Print `lines`; with `append_to`, also append them (and a blank line) to that file."""
    text = "\n".join(lines)
    print(text)
    if append_to:
        with open(append_to, "a") as out:
            out.write(text + "\n\n")
