"""Beam's IPython probe answered without importing IPython, and as before once it is imported."""
from __future__ import annotations

import subprocess
import sys

import pytest

_BUILD = """
import sys
import apache_beam as beam
{patch}
pipeline = beam.Pipeline()
_ = pipeline | beam.Create([1, 2]) | beam.Map(lambda x: x + 1)
print("IPython" in sys.modules)
"""


def _imports_ipython(patch: str) -> bool:
    """Whether building a small pipeline in a fresh process imports IPython."""
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _BUILD.format(patch=patch)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_building_a_job_does_not_import_ipython() -> None:
    pytest.importorskip("IPython")   # without it there is nothing to avoid
    assert _imports_ipython("")      # Beam's own probe imports it
    assert not _imports_ipython(
        "from fleetstream.runtime.ipython_probe import answer_ipython_probe_without_import\n"
        "answer_ipython_probe_without_import()")


def test_once_ipython_is_imported_beam_s_probe_answers(monkeypatch) -> None:
    from apache_beam import pipeline
    from apache_beam.utils import interactive_utils

    from fleetstream.runtime import ipython_probe

    asked = []
    monkeypatch.setattr(ipython_probe, "_beam_probe", lambda: asked.append(1) or True)
    monkeypatch.setattr(interactive_utils, "is_in_ipython", interactive_utils.is_in_ipython)
    monkeypatch.setattr(pipeline, "is_in_ipython", pipeline.is_in_ipython)
    ipython_probe.answer_ipython_probe_without_import()
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert interactive_utils.is_in_ipython() is False and pipeline.is_in_ipython() is False
    assert asked == []
    monkeypatch.setitem(sys.modules, "IPython", object())
    assert interactive_utils.is_in_ipython() is True and asked == [1]
