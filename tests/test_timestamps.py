"""Timestamp normalisation: epoch ms, epoch s and ISO strings to one form."""
from __future__ import annotations

import pytest

from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms


@pytest.mark.parametrize("value, expected", [
    ("2026-03-01T08:15:30.500Z", "2026-03-01T08:15:30.500Z"),
    ("2026-03-01T08:15:30Z", "2026-03-01T08:15:30.000Z"),
    ("2026-03-01T09:15:30.5+01:00", "2026-03-01T08:15:30.500Z"),
    ("2026-03-01T08:15:30", "2026-03-01T08:15:30.000Z"),       # naive: UTC
    (1740816930000, "2025-03-01T08:15:30.000Z"),               # epoch ms
    (1740816930, "2025-03-01T08:15:30.000Z"),                  # epoch s
    (1740816930.25, "2025-03-01T08:15:30.250Z"),
    ("1740816930000", "2025-03-01T08:15:30.000Z"),             # numbers as text
])
def test_every_input_form_normalises(value: object, expected: str) -> None:
    assert iso_ms(to_epoch_ms(value)) == expected


@pytest.mark.parametrize("value", ["abc", "", "nan", None, True, float("inf"), "2026-13-01", [1]])
def test_non_timestamps_raise_value_or_type_error(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        to_epoch_ms(value)
