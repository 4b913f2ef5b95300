"""The fast paths of the per-message path give what the plain definitions give."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from fleetstream.mappers.entries import BadValue, larger_of, unit_number_reader
from fleetstream.schemas.envelope import source_message_id
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms
from fleetstream.schemas.units import MILES_TO_KM, SAME
from fleetstream.transforms.permissions import permitted_data

ENTRY = [{"data": 1, "timestamp": "t"}]


def test_a_wholly_permitted_capability_is_kept_as_it_is() -> None:
    diagnostics = {"odometer": ENTRY, "speed": ENTRY}
    kept = permitted_data({"diagnostics": diagnostics, "doors": {}},
                          {"diagnostics": frozenset({"odometer", "speed", "fuel_level"}),
                           "doors": frozenset({"locks_state"})})
    assert kept == {"diagnostics": diagnostics}
    assert kept["diagnostics"] is diagnostics


@pytest.mark.parametrize("source", ["tesla", "bmw", "", "s" * 100])
@pytest.mark.parametrize("payload", [b"", b"{}", b"x" * 1000])
def test_source_message_id_is_keyed_blake2b(source: str, payload: bytes) -> None:
    expected = hashlib.blake2b(payload, digest_size=16, key=source.encode()[:64]).hexdigest()
    assert source_message_id(source, payload) == expected
    assert source_message_id(source, payload) == expected  # the keyed hasher is reused


@pytest.mark.parametrize("epoch_ms", [0, 1, 999, -1, -1000, -1001, 1772352000123,
                                      253_402_300_799_999])
def test_iso_ms_and_back(epoch_ms: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=epoch_ms)
    text = f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
    assert iso_ms(epoch_ms) == text
    if epoch_ms >= 0:
        assert to_epoch_ms(text) == epoch_ms
        assert to_epoch_ms(text.replace("Z", "+00:00")) == epoch_ms


def test_unit_number_reader_matches_units_exactly_then_case_insensitively() -> None:
    read = unit_number_reader("diagnostics.odometer", {"km": SAME, "miles": MILES_TO_KM})
    assert read("10", "km") == {"value": 10.0, "unit": "kilometers"}
    assert read(10, "MILES") == {"value": 16.09344, "unit": "kilometers"}
    with pytest.raises(BadValue, match="unit 'mi' is not one of km, miles"):
        read(10, "mi")
    with pytest.raises(BadValue, match=r"unit \['km'\] is not one of"):
        read(10, ["km"])


def test_larger_of_prefers_errors_then_the_first_largest_value() -> None:
    def data(value: float) -> tuple[dict, None]:
        return {"data": {"value": value, "unit": "kilowatts"}, "timestamp": "t"}, None
    failure = ({"failure": {"reason": "unavailable"}, "timestamp": "t"}, None)
    error = ({"failure": {"reason": "format_error"}, "timestamp": "t"}, {"field": "f"})
    first, second = data(7.0), data(7.0)
    assert larger_of([first, second]) is first
    assert larger_of([data(1.0), data(3.0)])[0]["data"]["value"] == 3.0
    assert larger_of([data(9.0), error]) is error
    assert larger_of([failure, data(2.0)])[0]["data"]["value"] == 2.0
    assert larger_of([failure, failure]) is failure
