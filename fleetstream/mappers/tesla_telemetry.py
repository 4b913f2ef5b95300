"""Tesla fleet-telemetry records as its Kafka dispatcher writes them: protobuf (docs/sources.md).

The fleet-telemetry server writes each record to the topic
``<namespace>_<record type>``; the raw envelope's `record_type` is that type
(DATA-CONTRACTS §1, taken from the topic at ingest, the payload unread). One
source, four record types (`RECORD_TYPES`; no record type reads as ``V``):

- ``V``, vehicle data: ``Payload{data: [Datum{key: Field, value: Value}],
  created_at, vin}``. Field numbers become Tesla's Field names and go through
  the same table as the JSON form (`tesla.TARGETS`: units, codes, Soc over
  BatteryLevel, the larger charging power), every datum at `created_at` (the
  receive time when unset). A Value holds one typed kind: text (most), whole
  and real numbers (a 32-bit `float_value` is read to its 7 significant
  digits: 37.2, not 37.200000762939453), a boolean, a `location_value`, an enum
  (read as its name: ``DetailedChargeStateCharging``), or ``invalid: true``
  (the vehicle's own "unavailable"). A Location may also arrive as the text
  ``(37.412374 N, 122.145867 W)``. Field numbers not in the table (newer
  firmware, Fields the catalogue has no property for) are ignored, like unknown
  keys of every source (§2); a Value of a kind the mapper does not know is a
  format_error of the properties its Field feeds.
- ``connectivity``: the server's note that a vehicle connected or disconnected.
  The catalogue has no property for it, so a readable one (a VIN, a readable
  `created_at`) is *ignored*: counted, not delivered, not a dead letter; an
  unreadable one fails.
- ``errors``: errors the vehicle reports about its telemetry configuration
  (an unsupported field, a rate it cannot keep). No data: each record becomes
  a dead letter (outcome failed) whose `errors` are the vehicle's, one
  ``{"field": "vehicle_error", "reason": "<name>: <body> (<tag>=<value>, ...)"}``
  each, for `fleetstream dead-letters list`.
- ``alerts``: not read (ignored).

A payload that is not the record type's protobuf message (garbage, truncated,
the server's JSON form), has no VIN, or an unreadable `created_at` fails as a
whole; so does a record type the mapper does not know.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

from google.protobuf.message import DecodeError

from fleetstream.mappers.base import FAILED, IGNORED, MapResult, failed
from fleetstream.mappers.entries import (UNAVAILABLE, BadValue, OemMarked, Stamp, Target,
                                         Unreadable, message_stamp, read_coordinates, require_vin,
                                         show, target)
from fleetstream.mappers.proto import tesla_fleet_telemetry_pb2 as pb
from fleetstream.mappers.tesla import TARGETS, map_datums

SOURCE = "tesla_telemetry"
#: protobuf: dead letters keep the payload as `payload_b64`, whatever its bytes
BINARY = True

VEHICLE_DATA = "V"
CONNECTIVITY = "connectivity"
ERRORS = "errors"
ALERTS = "alerts"
#: the record types of fleet-telemetry's dispatcher, one raw topic each
RECORD_TYPES = (VEHICLE_DATA, CONNECTIVITY, ERRORS, ALERTS)

_LOCATION_TEXT = re.compile(r"\(\s*([0-9.]+)\s*([NS])\s*,\s*([0-9.]+)\s*([EW])\s*\)")


def _read_location(raw: object, unit: object = None) -> dict[str, float]:
    """A `location_value`, or the older text form ``(37.412374 N, 122.145867 W)``."""
    if type(raw) is str:
        match = _LOCATION_TEXT.fullmatch(raw.strip())
        if match is None:
            raise BadValue(f"not a location: {show(raw)}")
        latitude, north_south, longitude, east_west = match.groups()
        try:
            raw = {"latitude": float(latitude) * (-1 if north_south == "S" else 1),
                   "longitude": float(longitude) * (-1 if east_west == "W" else 1)}
        except ValueError:
            raise BadValue(f"not a location: {show(raw)}") from None
    return read_coordinates(raw)


#: Field name -> the properties it feeds: the JSON form's table, Location also from text
_TARGETS: Mapping[str, tuple[Target, ...]] = {
    **TARGETS, "Location": (target("vehicle_location.coordinates", _read_location),)}

#: Field number -> name, for the Fields the tables know (the rest are ignored)
_FIELD_NAMES: Mapping[int, str] = {number: name for name, number in pb.Field.items()}

_ENUM_KINDS: Mapping[str, Mapping[int, str]] = {
    field.name: {value.number: value.name for value in field.enum_type.values}
    for field in pb.Value.DESCRIPTOR.oneofs_by_name["value"].fields
    if field.enum_type is not None}


def _typed_value(value: pb.Value) -> object:
    """The content of a Datum's Value: its one typed kind, as the readers take it."""
    kind = value.WhichOneof("value")
    if kind == "string_value":  # the common case
        return value.string_value
    if kind == "double_value" or kind == "int_value" or kind == "long_value" \
            or kind == "boolean_value":
        return getattr(value, kind)
    if kind == "float_value":  # a 32-bit float, widened: back to the digits it holds
        return float(f"{value.float_value:.7g}")
    if kind == "location_value":
        location = value.location_value
        return {"latitude": location.latitude, "longitude": location.longitude}
    if kind == "invalid":
        if value.invalid:
            raise OemMarked(UNAVAILABLE, "marked invalid by the vehicle")
        raise BadValue("invalid: false and no value")
    if kind in _ENUM_KINDS:  # its name; a number newer than our schema reads as no code
        number = getattr(value, kind)
        return _ENUM_KINDS[kind].get(number) or f"{kind} {number}"
    if kind is None:
        raise BadValue("the value holds no kind this mapper reads (unset, or a newer type)")
    raise BadValue(f"a {kind} is not a value this field takes")


def map_payload(payload: str | bytes, received_at_ms: int,
                record_type: str | None = None) -> MapResult:
    """Map one fleet-telemetry record of `record_type` (None: ``V``); never raises."""
    read = _READERS.get(VEHICLE_DATA if record_type is None else record_type)
    if read is None:
        return failed(f"unknown record type {record_type!r}; known: {', '.join(RECORD_TYPES)}",
                      "record_type")
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    try:
        return read(data, received_at_ms)
    except DecodeError as error:
        return failed(f"not a fleet-telemetry {record_type or VEHICLE_DATA} record "
                      f"(protobuf): {error}")
    except Unreadable as error:
        return failed(error.reason, error.field)


def _created_at(record: pb.Payload | pb.VehicleConnectivity | pb.VehicleErrors,
                received_at_ms: int) -> Stamp:
    """The record's `created_at` (the receive time when unset); Unreadable when out of range."""
    if not record.HasField("created_at"):
        return message_stamp(None, received_at_ms, "created_at")
    moment = record.created_at
    return message_stamp(moment.seconds * 1000 + moment.nanos // 1_000_000, received_at_ms,
                         "created_at")


def _map_vehicle_data(data: bytes, received_at_ms: int) -> MapResult:
    record = pb.Payload.FromString(data)
    vin = require_vin(record.vin or None)
    names = _FIELD_NAMES
    datums = ((names.get(datum.key), datum.value) for datum in record.data)
    return map_datums(vin, _created_at(record, received_at_ms), datums, _typed_value, _TARGETS)


def _map_connectivity(data: bytes, received_at_ms: int) -> MapResult:
    record = pb.VehicleConnectivity.FromString(data)
    vin = require_vin(record.vin or None)
    _created_at(record, received_at_ms)
    return MapResult(vin, IGNORED, {}, [], None)


def _map_errors(data: bytes, received_at_ms: int) -> MapResult:
    record = pb.VehicleErrors.FromString(data)
    vin = require_vin(record.vin or None)
    _created_at(record, received_at_ms)
    errors = [{"field": "vehicle_error", "reason": _describe(error)} for error in record.errors]
    if not errors:
        return failed("an errors record without errors", "errors", vin)
    return MapResult(vin, FAILED, {}, errors, None)


def _describe(error: pb.VehicleError) -> str:
    """``<name>: <body> (<tag>=<value>, ...)``, each part cut to a readable length."""
    tags = ", ".join(f"{key}={value}" for key, value in sorted(error.tags.items()))
    text = error.name or "(no name)"
    if error.body:
        text += f": {error.body}"
    if tags:
        text += f" ({tags})"
    return text if len(text) <= 500 else text[:497] + "..."


def _ignore(data: bytes, received_at_ms: int) -> MapResult:
    return MapResult(None, IGNORED, {}, [], None)


_READERS: Mapping[str, Callable[[bytes, int], MapResult]] = {
    VEHICLE_DATA: _map_vehicle_data,
    CONNECTIVITY: _map_connectivity,
    ERRORS: _map_errors,
    ALERTS: _ignore,
}
