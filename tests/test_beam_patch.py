"""The rebuilt Beam runner classes (fleetstream.runtime.beam_patch): edits apply exactly."""
from __future__ import annotations

import zipfile

import pytest

from fleetstream.runtime import beam_patch


def test_an_edit_applies_only_where_its_text_occurs_exactly_once() -> None:
    assert beam_patch.apply_edits("A.java", "a b c", [("b", "x"), ("c", "y")]) == "a x y"
    with pytest.raises(beam_patch.PatchError, match="A.java .* not found once: 'q'"):
        beam_patch.apply_edits("A.java", "a b c", [("q", "x")])
    with pytest.raises(beam_patch.PatchError, match="not found once: 'b'"):
        beam_patch.apply_edits("A.java", "b b", [("b", "x")])


@pytest.mark.servers   # fetches Beam's sources through Maven, as `fleetstream dev up` does
def test_the_patched_jar_holds_both_classes_built_from_beams_sources() -> None:
    """Fetches Beam's sources through Maven and compiles them (as `dev up jobserver` does)."""
    from fleetstream.dev.jobserver import beam_fixes_jar

    with zipfile.ZipFile(beam_fixes_jar()) as jar:
        names = set(jar.namelist())
    assert {path.replace(".java", ".class") for path in beam_patch.EDITS} <= names
