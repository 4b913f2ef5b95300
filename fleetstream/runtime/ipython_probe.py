"""Building a job without importing IPython to learn that it is not running.

Beam 2.62 asks `apache_beam.utils.interactive_utils.is_in_ipython()` on every
`Pipeline.apply` (to relabel transforms in a notebook) and in `Pipeline.run`; it
answers by importing IPython and calling `get_ipython()`. Where IPython is installed
but not running (a command line, a test run), the first call imports it and its
dependencies (jedi, prompt_toolkit, ...): ~0.25 CPU s of the replay's fixed cost,
measured here, for a `False` known in advance: an IPython session has imported IPython.

`answer_ipython_probe_without_import()` makes the probe say False while IPython is not
imported and ask IPython as before once it is; the answer is the same in both cases.

Gap it fills: Beam's probe imports the package it asks about (related:
BEAM-10764, "Make is_in_ipython robust"; no issue about its cost was found).
TODO: remove once Beam checks `sys.modules` before importing IPython.
"""
from __future__ import annotations

import sys

from apache_beam import pipeline
from apache_beam.utils import interactive_utils

_beam_probe = interactive_utils.is_in_ipython


def is_in_ipython() -> bool:
    """Beam's probe, asked only when IPython is already imported (else False)."""
    return "IPython" in sys.modules and _beam_probe()


def answer_ipython_probe_without_import() -> None:
    """Make Beam's IPython probe (module-level and `Pipeline`'s copy) `is_in_ipython`."""
    interactive_utils.is_in_ipython = is_in_ipython
    pipeline.is_in_ipython = is_in_ipython
