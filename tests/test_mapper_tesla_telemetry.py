"""tesla_telemetry: fleet-telemetry protobuf records (docs/sources.md), on real protobuf bytes.

Golden records for every mapped Field (text and typed values, unit conversions),
connectivity, errors and alerts records, and the path of a record type from the
Kafka topic through envelopes, the Avro archive and dead letters to a DirectRunner
replay that delivers documents and dead letters.
"""
from __future__ import annotations

import base64
import glob
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from fleetstream.io.archive.format import encode_archive, read_archive
from fleetstream.io.kafka.record_topics import record_topics
from fleetstream.io.kafka.transforms import _PollToEnvelopesFn, _ToEnvelopeFn
from fleetstream.mappers import MAPPERS, RECORD_TYPES
from fleetstream.mappers.base import FAILED, IGNORED, OK, PARTIAL
from fleetstream.mappers.proto import tesla_fleet_telemetry_pb2 as pb
from fleetstream.mappers.tesla import map_payload as map_json
from fleetstream.mappers.tesla_telemetry import SOURCE, map_payload
from fleetstream.pipelines.dead_letters import envelope_line
from fleetstream.pipelines.replay import run_replay
from fleetstream.schemas.dead_letter import dead_letter
from fleetstream.schemas.envelope import RawEnvelope, parse_envelope_line
from fleetstream.settings.config import load_config
from fleetstream.settings.topics import DEFAULT_RAW_TOPICS, FLEETSTREAM_TOPICS
from fleetstream.simulator import activations, simulate, write_envelopes
from fleetstream.simulator.formats import FORMATS

VIN = "5YJ3E7EB0KF000001"
CREATED_MS = 1772352930500  # 2026-03-01T08:15:30.500Z
AT = "2026-03-01T08:15:30.500Z"
RECEIVED_MS = 1772352931020
MILE = 1.609344


def datum(key: int, **value: Any) -> pb.Datum:
    """One Datum; `value` names the Value kind: string_value="37.2", location_value=(lat, lon)."""
    item = pb.Datum(key=key)
    [(kind, raw)] = value.items()
    if kind == "location_value":
        item.value.location_value.latitude, item.value.location_value.longitude = raw
    else:
        setattr(item.value, kind, raw)
    return item


def record(*datums: pb.Datum, vin: str = VIN, created_ms: int | None = CREATED_MS) -> bytes:
    message = pb.Payload(vin=vin, data=datums)
    if created_ms is not None:
        message.created_at.FromMilliseconds(created_ms)
    return message.SerializeToString()


def mapped(*datums: pb.Datum, **kwargs: Any):
    return map_payload(record(*datums, **kwargs), RECEIVED_MS, "V")


def only(result, capability: str, name: str) -> dict[str, Any]:
    [entry] = result.data[capability][name]
    return entry


# --- vehicle data: every mapped Field -------------------------------------------------

NUMBERS = [  # Field, text as sent, (capability, property), expected value, unit
    (pb.VehicleSpeed, "37.2", ("diagnostics", "speed"), 37.2 * MILE, "kilometers_per_hour"),
    (pb.Odometer, "12873.4", ("diagnostics", "odometer"), 12873.4 * MILE, "kilometers"),
    (pb.EstBatteryRange, "201.3", ("charging", "estimated_range"), 201.3 * MILE, "kilometers"),
    (pb.GpsHeading, "180", ("vehicle_location", "heading"), 180.0, "degrees"),
    (pb.OutsideTemp, "11.5", ("climate", "outside_temperature"), 11.5, "celsius"),
    (pb.InsideTemp, "20.5", ("climate", "inside_temperature"), 20.5, "celsius"),
    (pb.ACChargingPower, "7.2", ("charging", "charging_rate"), 7.2, "kilowatts"),
    (pb.DCChargingPower, "150", ("charging", "charging_rate"), 150.0, "kilowatts"),
]


@pytest.mark.parametrize("field, text, where, expected, unit", NUMBERS)
def test_numbers_as_text_and_as_doubles_in_our_units(field, text, where, expected, unit) -> None:
    for value in ({"string_value": text}, {"double_value": float(text)}):
        result = mapped(datum(field, **value))
        assert result.outcome == OK and result.vin == VIN and result.newest_ms == CREATED_MS
        entry = only(result, *where)
        assert entry["timestamp"] == AT
        assert entry["data"]["unit"] == unit
        assert entry["data"]["value"] == pytest.approx(expected, rel=1e-12)


def test_whole_numbers_and_32_bit_floats() -> None:
    result = mapped(datum(pb.GpsHeading, int_value=271), datum(pb.Odometer, long_value=10000),
                    datum(pb.OutsideTemp, float_value=11.3))
    assert only(result, "vehicle_location", "heading")["data"]["value"] == 271.0
    assert only(result, "diagnostics", "odometer")["data"]["value"] == pytest.approx(16093.44)
    # float32(11.3) is 11.300000190734863: read back to the digits it holds
    assert only(result, "climate", "outside_temperature")["data"]["value"] == 11.3


@pytest.mark.parametrize("field, where", [(pb.Soc, "battery_level"),
                                          (pb.BatteryLevel, "battery_level"),
                                          (pb.ChargeLimitSoc, "charge_limit")])
def test_percentages_become_fractions(field, where) -> None:
    assert only(mapped(datum(field, string_value="71.5")), "charging", where)["data"] == 0.715
    assert only(mapped(datum(field, int_value=80)), "charging", where)["data"] == 0.8


def test_soc_wins_over_battery_level_and_the_larger_charging_power_is_delivered() -> None:
    result = mapped(datum(pb.BatteryLevel, string_value="70"), datum(pb.Soc, string_value="71.5"),
                    datum(pb.ACChargingPower, double_value=11.0),
                    datum(pb.DCChargingPower, double_value=0.0))
    assert only(result, "charging", "battery_level")["data"] == 0.715
    assert only(result, "charging", "charging_rate")["data"]["value"] == 11.0


def test_location_typed_and_as_the_older_text() -> None:
    typed = mapped(datum(pb.Location, location_value=(52.52, 13.405)))
    assert only(typed, "vehicle_location", "coordinates")["data"] == {
        "latitude": 52.52, "longitude": 13.405}
    text = mapped(datum(pb.Location, string_value="(37.412374 N, 122.145867 W)"))
    assert only(text, "vehicle_location", "coordinates")["data"] == {
        "latitude": 37.412374, "longitude": -122.145867}
    bad = mapped(datum(pb.Location, string_value="somewhere"))
    assert bad.outcome == PARTIAL and bad.errors[0]["field"] == "Location"


@pytest.mark.parametrize("value, expected", [({"boolean_value": True}, "locked"),
                                             ({"boolean_value": False}, "unlocked"),
                                             ({"string_value": "true"}, "locked")])
def test_locked(value, expected) -> None:
    assert only(mapped(datum(pb.Locked, **value)), "doors", "locks_state")["data"] == expected


@pytest.mark.parametrize("state, status, plugged", [
    ("DetailedChargeStateCharging", "charging", "plugged_in"),
    ("DetailedChargeStateStarting", "charging", "plugged_in"),
    ("DetailedChargeStateComplete", "charging_complete", "plugged_in"),
    ("DetailedChargeStateStopped", "charging_paused", "plugged_in"),
    ("DetailedChargeStateNoPower", "charging_error", "plugged_in"),
    ("DetailedChargeStateDisconnected", "not_charging", "disconnected")])
def test_detailed_charge_state_typed_and_as_text(state, status, plugged) -> None:
    typed = datum(pb.DetailedChargeState,
                  detailed_charge_state_value=pb.DetailedChargeStateValue.Value(state))
    for result in (mapped(typed), mapped(datum(pb.DetailedChargeState, string_value=state))):
        assert only(result, "charging", "status")["data"] == status
        assert only(result, "charging", "plugged_in")["data"] == plugged


def test_a_charge_state_newer_than_our_schema_is_an_unknown_code() -> None:
    result = mapped(datum(pb.DetailedChargeState, detailed_charge_state_value=9))
    assert result.outcome == PARTIAL
    assert {error["reason"] for error in result.errors} == {
        "unknown code 'detailed_charge_state_value 9'"}


def test_tire_pressures_in_bar() -> None:
    result = mapped(*(datum(field, double_value=2.9 + index / 10) for index, field in enumerate(
        (pb.TpmsPressureFl, pb.TpmsPressureFr, pb.TpmsPressureRl, pb.TpmsPressureRr))))
    assert [entry["data"] for entry in result.data["diagnostics"]["tire_pressures"]] == [
        {"location": location, "pressure": {"value": pytest.approx(pressure), "unit": "bars"}}
        for location, pressure in (("front_left", 2.9), ("front_right", 3.0),
                                   ("rear_left", 3.1), ("rear_right", 3.2))]


def test_the_protobuf_form_maps_like_the_json_form() -> None:
    """The same record in both forms gives the same data (one OEM, one table)."""
    as_json = {"vin": VIN, "createdAt": AT, "data": [
        {"key": "VehicleSpeed", "value": {"stringValue": "37.2"}},
        {"key": "Odometer", "value": {"doubleValue": 12873.4}},
        {"key": "Soc", "value": {"stringValue": "71.5"}},
        {"key": "Location", "value": {"locationValue": {"latitude": 52.52, "longitude": 13.405}}},
        {"key": "DetailedChargeState", "value": {"stringValue": "DetailedChargeStateComplete"}},
        {"key": "Locked", "value": {"booleanValue": True}},
        {"key": "TpmsPressureRr", "value": {"invalid": True}}]}
    as_protobuf = record(
        datum(pb.VehicleSpeed, string_value="37.2"), datum(pb.Odometer, double_value=12873.4),
        datum(pb.Soc, string_value="71.5"), datum(pb.Location, location_value=(52.52, 13.405)),
        datum(pb.DetailedChargeState, detailed_charge_state_value=pb.DetailedChargeStateComplete),
        datum(pb.Locked, boolean_value=True), datum(pb.TpmsPressureRr, invalid=True))
    expected = map_json(orjson.dumps(as_json), RECEIVED_MS)
    result = map_payload(as_protobuf, RECEIVED_MS, "V")
    assert (result.outcome, result.vin, result.data, result.newest_ms) == (
        expected.outcome, expected.vin, expected.data, expected.newest_ms)


# --- the vehicle's own failures, our format errors, and what is ignored ----------------

def test_invalid_is_the_vehicles_unavailable_not_a_partial_message() -> None:
    result = mapped(datum(pb.Odometer, invalid=True), datum(pb.Soc, string_value="50"))
    assert result.outcome == OK
    assert only(result, "diagnostics", "odometer")["failure"] == {
        "reason": "unavailable", "description": "Odometer: marked invalid by the vehicle"}


@pytest.mark.parametrize("value, reason", [
    ({"string_value": "abc"}, "not a number"),
    ({"boolean_value": True}, "not a number"),                       # a value of a wrong type
    ({"location_value": (1.0, 2.0)}, "not a number"),
    ({"shift_state_value": pb.ShiftStateD}, "not a number"),          # an enum of another field
    ({"detailed_charge_state_value": 40}, "not a number"),            # a newer enum number
    ({"string_value": "9999999"}, "outside"),
    ({"invalid": False}, "invalid: false")])
def test_values_we_cannot_read_are_format_errors(value, reason) -> None:
    result = mapped(datum(pb.Odometer, **value), datum(pb.Soc, string_value="50"))
    assert result.outcome == PARTIAL
    [error] = result.errors
    assert error["field"] == "Odometer" and reason in error["reason"]
    assert only(result, "diagnostics", "odometer")["failure"]["reason"] == "format_error"
    assert only(result, "charging", "battery_level")["data"] == 0.5


def test_a_value_kind_newer_than_our_schema_is_a_format_error() -> None:
    """A Value kind we do not declare (33: hvac_auto_mode_value) parses, with no kind set."""
    newer = b"\x08\x05\x12\x03\x88\x02\x01"  # Datum{key: Odometer, value: {33: 1}}
    payload = pb.Payload(vin=VIN).SerializeToString() + b"\x0a" + bytes([len(newer)]) + newer
    result = map_payload(payload, RECEIVED_MS, "V")
    assert result.outcome == PARTIAL and "no kind this mapper reads" in result.errors[0]["reason"]


def test_unknown_and_unmapped_fields_are_ignored() -> None:
    """Newer firmware's Field numbers and Fields the catalogue has no property for."""
    result = mapped(datum(999, string_value="x"), datum(pb.Gear, shift_state_value=pb.ShiftStateD),
                    datum(pb.DoorState, string_value="DriverFront"), datum(pb.Soc, int_value=50))
    assert result.outcome == OK and result.data == {
        "charging": {"battery_level": [{"data": 0.5, "timestamp": AT}]}}


def test_created_at_missing_is_the_receive_time() -> None:
    result = mapped(datum(pb.Soc, int_value=50), created_ms=None)
    assert only(result, "charging", "battery_level")["timestamp"] == "2026-03-01T08:15:31.020Z"


@pytest.mark.parametrize("payload, field, reason", [
    (record(datum(pb.Soc, int_value=50), vin=""), "vin", "no VIN"),
    (b"\xff\xff\xff", "payload", "not a fleet-telemetry V record (protobuf)"),
    (record(datum(pb.Soc, int_value=50))[:-3], "payload", "not a fleet-telemetry V record"),
    (orjson.dumps({"vin": VIN, "data": []}), "payload", "not a fleet-telemetry V record"),
])
def test_unreadable_records_fail_whole(payload, field, reason) -> None:
    result = map_payload(payload, RECEIVED_MS, "V")
    assert result.outcome == FAILED and result.data == {}
    assert result.errors[0]["field"] == field and reason in result.errors[0]["reason"]


def test_created_at_out_of_range_fails() -> None:
    message = pb.Payload(vin=VIN)
    message.created_at.seconds = -5
    result = map_payload(message.SerializeToString(), RECEIVED_MS, "V")
    assert result.outcome == FAILED and result.errors[0]["field"] == "created_at"


def test_no_record_type_reads_as_vehicle_data_and_an_unknown_one_fails() -> None:
    payload = record(datum(pb.Soc, int_value=50))
    assert map_payload(payload, RECEIVED_MS).outcome == OK
    result = map_payload(payload, RECEIVED_MS, "telemetry")
    assert result.outcome == FAILED and result.errors[0]["field"] == "record_type"


# --- connectivity, errors, alerts ------------------------------------------------------

def connectivity(status: int, vin: str = VIN) -> bytes:
    message = pb.VehicleConnectivity(vin=vin, connection_id="c1", status=status,
                                     network_interface="wifi")
    message.created_at.FromMilliseconds(CREATED_MS)
    return message.SerializeToString()


@pytest.mark.parametrize("status", [pb.CONNECTED, pb.DISCONNECTED, pb.UNKNOWN])
def test_connectivity_records_are_counted_and_not_delivered(status) -> None:
    result = map_payload(connectivity(status), RECEIVED_MS, "connectivity")
    assert (result.outcome, result.vin, result.data, result.errors) == (IGNORED, VIN, {}, [])


def test_unreadable_connectivity_records_fail() -> None:
    assert map_payload(connectivity(pb.CONNECTED, vin=""), RECEIVED_MS,
                       "connectivity").outcome == FAILED
    assert map_payload(b"\x1a\xff", RECEIVED_MS, "connectivity").outcome == FAILED


def test_errors_records_are_dead_letters_with_the_vehicles_errors() -> None:
    message = pb.VehicleErrors(vin=VIN)
    message.created_at.FromMilliseconds(CREATED_MS)
    first = message.errors.add(name="unsupported_field", body="not supported")
    first.tags["field_name"] = "SemitruckTpmsPressureRe1L0"
    message.errors.add(name="rate_limited")
    result = map_payload(message.SerializeToString(), RECEIVED_MS, "errors")
    assert (result.outcome, result.vin, result.data) == (FAILED, VIN, {})
    assert result.errors == [
        {"field": "vehicle_error",
         "reason": "unsupported_field: not supported (field_name=SemitruckTpmsPressureRe1L0)"},
        {"field": "vehicle_error", "reason": "rate_limited"}]
    empty = map_payload(pb.VehicleErrors(vin=VIN).SerializeToString(), RECEIVED_MS, "errors")
    assert empty.outcome == FAILED and empty.errors[0]["field"] == "errors"


def test_alerts_are_ignored_unread() -> None:
    assert map_payload(b"\xff anything", RECEIVED_MS, "alerts").outcome == IGNORED


# --- the record type from the topic to the dead letter ---------------------------------

def test_the_registry_and_the_topics_follow_the_dispatcher() -> None:
    assert MAPPERS[SOURCE] is map_payload
    assert RECORD_TYPES == {SOURCE: ("V", "connectivity", "errors", "alerts")}
    topics = record_topics({"tesla": "raw.tesla", SOURCE: "raw.tesla_telemetry"})
    assert topics == {"raw.tesla": ("tesla", None),
                      "raw.tesla_telemetry_V": (SOURCE, "V"),
                      "raw.tesla_telemetry_connectivity": (SOURCE, "connectivity"),
                      "raw.tesla_telemetry_errors": (SOURCE, "errors"),
                      "raw.tesla_telemetry_alerts": (SOURCE, "alerts")}
    assert DEFAULT_RAW_TOPICS[SOURCE] == "raw.tesla_telemetry"
    names = {topic.name for topic in FLEETSTREAM_TOPICS}
    assert {"raw.tesla", "raw.tesla_telemetry_V", "raw.tesla_telemetry_errors"} <= names
    assert "raw.tesla_telemetry" not in names


def test_kafka_records_become_envelopes_with_the_record_type_of_their_topic() -> None:
    fn = _PollToEnvelopesFn({"raw.tesla": "tesla", "raw.tesla_telemetry_V": SOURCE,
                             "raw.tesla_telemetry_errors": SOURCE},
                            {"raw.tesla_telemetry_V": "V", "raw.tesla_telemetry_errors": "errors"})
    [envelopes] = list(fn.process([("raw.tesla_telemetry_V", 1, b"\x08"), ("raw.tesla", 2, b"{}"),
                                   ("raw.tesla_telemetry_errors", 3, b"")]))
    assert envelopes == [RawEnvelope(SOURCE, 1, b"\x08", "V"), RawEnvelope("tesla", 2, b"{}"),
                         RawEnvelope(SOURCE, 3, b"", "errors")]
    assert _ToEnvelopeFn({"raw.tesla": "tesla"})._envelope("raw.tesla", 5, b"{}") == \
        RawEnvelope("tesla", 5, b"{}", None)


def test_envelope_lines_keep_the_record_type_and_other_sources_lines_are_unchanged() -> None:
    binary = RawEnvelope(SOURCE, CREATED_MS, record(datum(pb.Soc, int_value=50)), "V")
    line = binary.to_json_line()
    assert orjson.loads(line)["record_type"] == "V" and "payload_b64" in orjson.loads(line)
    assert parse_envelope_line(line) == binary
    text = RawEnvelope("tesla", CREATED_MS, b"{}")
    assert orjson.loads(text.to_json_line()) == {
        "source": "tesla", "received_at": AT, "payload": "{}"}
    assert text.source_message_id() == RawEnvelope("tesla", 0, b"{}").source_message_id()
    assert binary.source_message_id() != binary._replace(record_type="errors").source_message_id()
    with pytest.raises(ValueError, match="record_type"):
        parse_envelope_line(b'{"source": "x", "received_at": 1, "payload": "", "record_type": 5}')


def test_the_avro_archive_keeps_record_types_and_other_files_keep_their_bytes() -> None:
    envelopes = [RawEnvelope(SOURCE, CREATED_MS, b"\x00\x01", "V"),
                 RawEnvelope(SOURCE, CREATED_MS + 1, b"\x02", "connectivity")]
    data = encode_archive(envelopes, "avro", "raw/x.avro")
    assert list(read_archive(io.BytesIO(data), "x.avro")) == envelopes
    plain = [RawEnvelope("bmw", CREATED_MS, b"{}")]
    plain_data = encode_archive(plain, "avro", "raw/y.avro")
    assert b"record_type" not in plain_data
    assert list(read_archive(io.BytesIO(plain_data), "y.avro")) == plain


def test_a_dead_letter_rebuilds_its_envelope_with_the_record_type() -> None:
    payload = b"\xff\x00garbage"
    letter = dead_letter(SOURCE, CREATED_MS, FAILED, "map", [], payload, "m", "errors")
    assert letter["payload_b64"] == base64.b64encode(payload).decode()
    assert parse_envelope_line(envelope_line(letter)) == RawEnvelope(
        SOURCE, CREATED_MS, payload, "errors")
    assert "record_type" not in dead_letter("bmw", 1, FAILED, "map", [], b"{}", "m")


# --- simulator and replay on real bytes ------------------------------------------------

def test_the_simulator_writes_fleet_telemetry_records_that_map() -> None:
    outcomes: dict[tuple[str, str], int] = {}
    for envelope in simulate(6, duration_s=1200, rate=0.2, seed=5, sources=(SOURCE,)):
        assert set(envelope) == {"source", "received_at", "payload_b64", "record_type"}
        raw = parse_envelope_line(orjson.dumps(envelope))
        result = map_payload(raw.payload, raw.received_at_ms, raw.record_type)
        key = (raw.record_type, result.outcome)
        outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes[("V", OK)] > 300 and outcomes[("connectivity", IGNORED)] > 5
    assert set(outcomes) <= {("V", OK), ("V", PARTIAL), ("V", FAILED),
                             ("connectivity", IGNORED), ("errors", FAILED)}
    assert isinstance(FORMATS[SOURCE].to_protobuf(
        FORMATS[SOURCE].encode(_car(), CREATED_MS, True)), bytes)


def _car():
    from fleetstream.simulator import fleet
    return fleet(1, sources=(SOURCE,))[0]


def test_replay_of_fleet_telemetry_envelopes_delivers_documents_and_dead_letters(
        tmp_path: Path) -> None:
    """DirectRunner, the whole pipeline: protobuf envelopes in, documents and dead letters out."""
    vehicles = 4
    envelopes = list(simulate(vehicles, duration_s=600, rate=0.2, seed=11, error_rate=0.05,
                              sources=(SOURCE,)))
    write_envelopes(tmp_path / "raw-1.jsonl", envelopes)
    with open(tmp_path / "activations.jsonl", "wb") as out:
        for event in activations(vehicles, ["fleet"], seed=11, sources=(SOURCE,)):
            out.write(orjson.dumps({**event, "status": "approved"}) + b"\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "applications": [{"id": "fleet", "permissions": ["diagnostics.*", "charging.*",
                                                         "vehicle_location.*", "doors.*",
                                                         "climate.*"],
                          "sink": {"type": "file", "path": str(tmp_path / "unused")}}],
        "activations": "activations.jsonl"}))
    expected: dict[str, int] = {}
    for envelope in envelopes:
        raw = parse_envelope_line(orjson.dumps(envelope))
        outcome = map_payload(raw.payload, raw.received_at_ms, raw.record_type).outcome
        expected[outcome] = expected.get(outcome, 0) + 1
    accounting = run_replay(str(tmp_path / "raw-*"), load_config(tmp_path / "config.yaml"),
                            output=str(tmp_path / "out"))
    assert accounting.get(SOURCE, "read") == len(envelopes)
    for outcome in (OK, PARTIAL, FAILED, IGNORED):
        assert accounting.get(SOURCE, outcome) == expected.get(outcome, 0), outcome
    documents = [orjson.loads(line) for path in glob.glob(str(tmp_path / "out/fleet/*.jsonl"))
                 for line in open(path, "rb")]
    assert documents and all(document["brand"] == SOURCE for document in documents)
    assert any("odometer" in document["data"].get("diagnostics", {}) for document in documents)
    assert any("locks_state" in document["data"].get("doors", {}) for document in documents)
    dead = [orjson.loads(line) for path in glob.glob(str(tmp_path / "out/dead_letters/*"))
            for line in open(path, "rb")]
    assert len(dead) == expected.get(FAILED, 0) + expected.get(PARTIAL, 0)
    assert all("payload_b64" in letter and letter["record_type"] in ("V", "errors")
               for letter in dead)
    assert any(letter["errors"][0]["field"] == "vehicle_error" for letter in dead)


def test_the_raw_reader_subscribes_one_topic_per_record_type() -> None:
    from fleetstream.io.kafka.settings import KafkaSettings
    from fleetstream.io.kafka.transforms import ReadRawFromKafka
    read = ReadRawFromKafka(KafkaSettings(), {"bmw": "raw.bmw", SOURCE: "fleet"})
    assert read._source_of_topic == {"raw.bmw": "bmw", **{
        f"fleet_{record_type}": SOURCE for record_type in RECORD_TYPES[SOURCE]}}
    assert read._record_type_of_topic == {f"fleet_{t}": t for t in RECORD_TYPES[SOURCE]}


def test_simulated_records_go_to_kafka_as_the_dispatcher_writes_them(monkeypatch) -> None:
    from fleetstream.io.kafka import producer

    sent = []

    class Recording:
        def __init__(self, bootstrap: str) -> None:
            pass

        def send(self, topic, key, value, headers=None) -> None:
            sent.append((topic, key, value, dict(headers or ())))

        def flush(self, timeout_s: float):
            return 0, []

    monkeypatch.setattr(producer, "AckedProducer", Recording)
    binary = {"source": SOURCE, "received_at": AT, "payload_b64": "CAE=", "record_type": "V"}
    text = {"source": "tesla", "received_at": AT, "payload": "{}"}
    assert producer.produce_envelopes("broker", [(VIN, binary), (VIN, text)], topic_of_source={
        SOURCE: "raw.tesla_telemetry", "tesla": "raw.tesla"}) == 2
    (topic, key, value, headers), plain = sent
    assert (topic, key, value) == ("raw.tesla_telemetry_V", VIN.encode(), b"\x08\x01")
    assert headers["vin"] == VIN and headers["txtype"] == "V" and int(headers["receivedat"]) > 0
    assert plain == ("raw.tesla", VIN.encode(), b"{}", {})
