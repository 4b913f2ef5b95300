"""Property tests of tesla_telemetry: whatever the bytes, the mapper never raises and keeps
the output contract (`tests.test_mappers_fuzz.check`).

Inputs: arbitrary bytes for every record type, valid records cut short or with bytes
flipped, and records built from random Datums: any Field number (newer firmware's
too), any Value kind with any content (values of a type the Field does not take).
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.mappers.base import FAILED, IGNORED
from fleetstream.mappers.proto import tesla_fleet_telemetry_pb2 as pb
from fleetstream.mappers.tesla_telemetry import RECORD_TYPES, SOURCE, map_payload
from tests.test_mappers_fuzz import FUZZ, RECEIVED_MS, check

FIELDS = st.sampled_from([number for _, number in pb.Field.items()]) | st.integers(0, 2**31 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
VALUES = st.one_of(
    st.builds(lambda text: pb.Value(string_value=text),
              st.text(max_size=20) | st.sampled_from(
                  ["37.2", "NaN", "1e999", "-5", "(37.4 N, 122.1 W)", "(95 N, 200 E)",
                   "DetailedChargeStateCharging", "true", "false", ""])),
    st.builds(lambda n: pb.Value(int_value=n), st.integers(-2**31, 2**31 - 1)),
    st.builds(lambda n: pb.Value(long_value=n), st.integers(-2**63, 2**63 - 1)),
    st.builds(lambda x: pb.Value(float_value=x), FLOAT32),
    st.builds(lambda x: pb.Value(double_value=x), FLOATS),
    st.builds(lambda b: pb.Value(boolean_value=b), st.booleans()),
    st.builds(lambda b: pb.Value(invalid=b), st.booleans()),
    st.builds(lambda lat, lon: pb.Value(location_value=pb.LocationValue(latitude=lat,
                                                                         longitude=lon)),
              FLOATS, FLOATS),
    st.builds(lambda n: pb.Value(detailed_charge_state_value=n), st.integers(-5, 40)),
    st.builds(lambda n: pb.Value(shift_state_value=n), st.integers(-5, 40)),
    st.builds(lambda: pb.Value(door_value=pb.Doors(DriverFront=True))),
    st.just(pb.Value()))
DATUMS = st.builds(lambda key, value: pb.Datum(key=key, value=value), FIELDS, VALUES)


@st.composite
def vehicle_data(draw: st.DrawFn) -> bytes:
    record = pb.Payload(vin=draw(st.sampled_from(["5YJ3E7EB0KF000001", "", "x"])),
                        data=draw(st.lists(DATUMS, max_size=12)),
                        is_resend=draw(st.booleans()))
    if draw(st.booleans()):
        record.created_at.seconds = draw(st.integers(-2**40, 2**40))
        record.created_at.nanos = draw(st.integers(0, 999_999_999))
    return record.SerializeToString()


def valid_record() -> bytes:
    record = pb.Payload(vin="5YJ3E7EB0KF000001", data=[
        pb.Datum(key=pb.VehicleSpeed, value=pb.Value(string_value="37.2")),
        pb.Datum(key=pb.Odometer, value=pb.Value(double_value=12873.4)),
        pb.Datum(key=pb.Location, value=pb.Value(
            location_value=pb.LocationValue(latitude=52.5, longitude=13.4))),
        pb.Datum(key=pb.DetailedChargeState, value=pb.Value(detailed_charge_state_value=4)),
        pb.Datum(key=pb.Soc, value=pb.Value(float_value=71.5))])
    record.created_at.FromMilliseconds(1772352930500)
    return record.SerializeToString()


def test_the_mapper_is_registered_as_binary_with_its_record_types() -> None:
    from fleetstream.mappers import BINARY_SOURCES, MAPPERS
    assert MAPPERS[SOURCE] is map_payload and SOURCE in BINARY_SOURCES


@FUZZ
@given(payload=st.binary(max_size=300), record_type=st.sampled_from([*RECORD_TYPES, None, "x"]))
def test_arbitrary_bytes(payload: bytes, record_type: str | None) -> None:
    check(SOURCE, map_payload(payload, RECEIVED_MS, record_type))


@FUZZ
@given(payload=st.text(max_size=200))
def test_arbitrary_text(payload: str) -> None:
    check(SOURCE, map_payload(payload, RECEIVED_MS, "V"))


@settings(FUZZ, max_examples=300)
@given(payload=vehicle_data())
def test_records_of_random_datums(payload: bytes) -> None:
    check(SOURCE, map_payload(payload, RECEIVED_MS, "V"))


@FUZZ
@given(cut=st.integers(0, 200), flips=st.lists(st.tuples(st.integers(0, 200),
                                                          st.integers(0, 255)), max_size=4))
def test_valid_records_cut_short_or_with_bytes_flipped(cut: int, flips: list) -> None:
    data = bytearray(valid_record())
    for position, byte in flips:
        data[position % len(data)] = byte
    payload = bytes(data[:cut % (len(data) + 1)])
    result = map_payload(payload, RECEIVED_MS, "V")
    check(SOURCE, result)
    assert result.outcome != IGNORED


@FUZZ
@given(payload=st.binary(max_size=120))
def test_connectivity_and_errors_records_never_deliver(payload: bytes) -> None:
    for record_type in ("connectivity", "errors"):
        result = map_payload(payload, RECEIVED_MS, record_type)
        check(SOURCE, result)
        assert result.outcome in (FAILED, IGNORED) and result.data == {}
