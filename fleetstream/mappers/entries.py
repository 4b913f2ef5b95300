"""Pure helpers the source mappers share (DATA-CONTRACTS §2-§5).

A mapper walks a payload field by field. A field it knows has a *target*: the
catalogue property it feeds and a *reader* that turns the raw value into that
property's data. Each field becomes one entry:

- ``{"data": <value>, "timestamp": "<ISO>"}`` when the reader accepts the value;
- ``{"failure": {"reason": "format_error", ...}, "timestamp": ...}`` when it does
  not (wrong type, unknown code or unit, out of range), together with an
  ``errors`` item naming the source field: the message is then partial;
- ``{"failure": {"reason": "unavailable" | "oem_error", ...}, ...}`` when the OEM
  itself marks the value; that is its report, not our error.

Readers are built once at import from the catalogue, so kinds, units, ranges and
enum values live in one place. A reader takes ``(raw, unit)`` (most ignore the
unit) and returns the data, or raises :class:`BadValue` (a format_error) or
:class:`OemMarked` (the OEM's own failure); both are rare, and exceptions cost
nothing on the common path.

The message as a whole is read by :func:`read_message`; a mapper raises
:class:`Unreadable` for a message it cannot read (no VIN, wrong shape), which
becomes a ``failed`` result.
"""
from __future__ import annotations

import reprlib
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

import orjson

from fleetstream.mappers.base import OK, PARTIAL, MapResult, failed
from fleetstream.schemas.catalogue import FRACTION, NUMBER, PROPERTIES, TIRE_PRESSURE
from fleetstream.schemas.mapped import Data
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms
from fleetstream.schemas.units import SAME, Scale

Entry = dict[str, Any]
ErrorItem = dict[str, str]
#: an entry and, when it is a format_error, the `errors` item that goes with it
Outcome = tuple[Entry, ErrorItem | None]
Reader = Callable[[Any, Any], Any]
#: where a source field goes: (capability, property, reader)
Target = tuple[str, str, Reader]
#: an entry's time as (epoch ms, ISO text)
Stamp = tuple[int, str]

UNAVAILABLE = "unavailable"
OEM_ERROR = "oem_error"
FORMAT_ERROR = "format_error"

LATITUDE_RANGE = (-90.0, 90.0)
LONGITUDE_RANGE = (-180.0, 180.0)

_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time ISO-8601 can show
_STAMP_TYPES = (int, float, str)

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 40, 40


class Trouble(Exception):
    """A value that is delivered as a failure entry rather than as data."""

    def outcome(self, field: str, timestamp: str) -> Outcome:
        """The failure entry for `field` and, for a format_error, its `errors` item."""
        raise NotImplementedError


class BadValue(Trouble):
    """We cannot read the value: wrong type, unknown code or unit, out of range."""

    def outcome(self, field: str, timestamp: str) -> Outcome:
        return format_error(field, str(self), timestamp)


class OemMarked(Trouble):
    """The OEM marks the value itself as unavailable or in error."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason

    def outcome(self, field: str, timestamp: str) -> Outcome:
        return oem_failure(self.reason, f"{field}: {self}", timestamp)


class Unreadable(Exception):
    """The message as a whole cannot be read; `field` names where it went wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def read_message(payload: str | bytes, received_at_ms: int,
                 map_message: Callable[[dict[str, Any], int], MapResult]) -> MapResult:
    """Parse `payload` as a JSON object and map it; never raises.

    Not JSON (or not UTF-8), not an object, or :class:`Unreadable` raised by
    `map_message` all give a failed result.
    """
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return failed(f"not JSON: {exc}")
    if type(message) is not dict:
        return failed(f"expected a JSON object, got {type(message).__name__}")
    try:
        return map_message(message, received_at_ms)
    except Unreadable as exc:
        return failed(exc.reason, exc.field)


def finish(vin: str, data: Data, errors: list[ErrorItem], newest_ms: int | None) -> MapResult:
    """The result of a readable message: partial when any entry is a format_error."""
    return MapResult(vin, PARTIAL if errors else OK, data, errors, newest_ms if data else None)


def show(raw: object) -> str:
    """A short repr of a raw value for error texts, however large or deeply nested."""
    return _SHORT.repr(raw)


# --- the message's shape ---------------------------------------------------------

def require_vin(vin: object, field: str = "vin") -> str:
    """The VIN, which must be a non-empty string."""
    if type(vin) is str and vin:
        return vin
    if vin is None:
        raise Unreadable(field, "no VIN")
    raise Unreadable(field, f"VIN must be a non-empty string, got {show(vin)}")


def require_object(value: object, field: str) -> dict[str, Any]:
    """`value` when it is a JSON object."""
    if type(value) is dict:
        return value
    raise Unreadable(field, f"expected an object, got {show(value)}")


def require_list(value: object, field: str) -> list[Any]:
    """`value` when it is a JSON array."""
    if type(value) is list:
        return value
    raise Unreadable(field, f"expected an array, got {show(value)}")


# --- timestamps --------------------------------------------------------------------

def stamp(raw: object) -> Stamp | None:
    """(epoch ms, ISO text) of epoch ms, epoch s or ISO text; None when unreadable."""
    return _stamp(raw) if type(raw) in _STAMP_TYPES else None


@lru_cache(maxsize=8192)
def _stamp(raw: int | float | str) -> Stamp | None:
    try:
        epoch_ms = to_epoch_ms(raw)
    except (ValueError, TypeError, OverflowError):
        return None
    return (epoch_ms, iso_ms(epoch_ms)) if 0 <= epoch_ms <= _LAST_MS else None


def message_stamp(raw: object, received_at_ms: int, field: str) -> Stamp:
    """A message-level time: `received_at_ms` when absent, Unreadable when unreadable."""
    if raw is None:
        raw = received_at_ms
    moment = stamp(raw)
    if moment is None:
        raise Unreadable(field, f"unreadable timestamp {show(raw)}")
    return moment


def datum_stamp(raw: object, fallback: Stamp) -> Stamp | None:
    """A datum's own time: `fallback` when absent, None when unreadable."""
    if raw is None:
        return fallback
    return _stamp(raw) if type(raw) in _STAMP_TYPES else None


# --- readers -------------------------------------------------------------------------

def _number_reader(low: float, high: float, unit_name: str | None, scale: Scale = SAME,
                   units: Mapping[str, Scale] | None = None, location: str | None = None) -> Reader:
    """Reads a number (or numeric text) converted by a scale and checked against [low, high].

    The scale is `scale`, or with `units` the one for the value's own unit (compared
    case-insensitively). The data is bare when `unit_name` is None, else
    ``{"value": x, "unit": unit_name}``; with `location`, one tire's
    ``{"location", "pressure"}``. One function per reader: calls are what cost.
    """
    unit_scale = None if units is None else _unit_scale(units)

    def read_number(raw: object, unit: object) -> Any:
        if unit_scale is None:
            multiply, divide = scale
        else:
            multiply, divide = (units.get(unit) if type(unit) is str else None) or unit_scale(unit)
        if type(raw) is bool:
            raise BadValue(f"not a number: {show(raw)}")
        try:
            number = float(raw) * multiply / divide
        except (TypeError, ValueError, OverflowError):
            raise BadValue(f"not a number: {show(raw)}") from None
        if not low <= number <= high:
            raise BadValue(f"{number:.10g} is outside {low:.10g} to {high:.10g}")
        value = number if unit_name is None else {"value": number, "unit": unit_name}
        return value if location is None else {"location": location, "pressure": value}
    return read_number


def _unit_scale(units: Mapping[str, Scale]) -> Callable[[object], Scale]:
    """The scale for a unit not spelled exactly as in `units`: compared case-insensitively."""
    lowered = {unit.lower(): scale for unit, scale in units.items()}
    expected = ", ".join(units)

    def scale_in(unit: object) -> Scale:
        scale = lowered.get(unit.lower()) if type(unit) is str else None
        if scale is None:
            raise BadValue(f"unit {show(unit)} is not one of {expected}")
        return scale
    return scale_in


def range_reader(low: float, high: float, scale: Scale = SAME) -> Reader:
    """Reads a bare number (fraction, degrees) converted by `scale`, within [low, high]."""
    return _number_reader(low, high, None, scale)


LATITUDE = range_reader(*LATITUDE_RANGE)
LONGITUDE = range_reader(*LONGITUDE_RANGE)


def number_reader(key: str, scale: Scale = SAME, units: Mapping[str, Scale] | None = None,
                  location: str | None = None) -> Reader:
    """Reads a number or fraction property of the catalogue, converted by `scale`.

    Numbers become ``{"value": x, "unit": <catalogue unit>}``, fractions stay bare.
    With `units`, the scale is the one for the value's own unit (see
    :func:`unit_number_reader`); with `location`, see :func:`tire_pressure_reader`.
    """
    spec = PROPERTIES[key]
    if spec.kind not in (NUMBER, FRACTION, TIRE_PRESSURE):
        raise ValueError(f"{key} is not a number but {spec.kind}")
    return _number_reader(spec.minimum, spec.maximum, spec.unit, scale, units, location)


def unit_number_reader(key: str, units: Mapping[str, Scale]) -> Reader:
    """A number or fraction property in whichever of `units` the value names."""
    return number_reader(key, units=units)


def tire_pressure_reader(location: str, scale: Scale = SAME,
                         units: Mapping[str, Scale] | None = None) -> Reader:
    """Reads one tire's pressure as ``{"location", "pressure": {"value", "unit": "bars"}}``."""
    return number_reader("diagnostics.tire_pressures", scale, units, location)


def enum_reader(key: str, codes: Mapping[str, str]) -> Reader:
    """Reads a source code (text, boolean as "true"/"false", or integer) into a catalogue enum."""
    unknown = set(codes.values()) - set(PROPERTIES[key].values)
    if unknown:
        raise ValueError(f"{key} has no value(s) {sorted(unknown)}")

    def read_enum(raw: object, unit: object) -> str:
        kind = type(raw)
        if kind is str:
            value = codes.get(raw)
        elif kind is bool:
            value = codes.get("true" if raw else "false")
        elif kind is int:
            value = codes.get(str(raw))
        else:
            value = None
        if value is None:
            raise BadValue(f"unknown code {show(raw)}")
        return value
    return read_enum


def read_coordinates(raw: object, unit: object = None) -> dict[str, float]:
    """Reads ``{"latitude", "longitude", ...}`` into a coordinates value."""
    if type(raw) is not dict:
        raise BadValue(f"not a location: {show(raw)}")
    try:
        latitude = LATITUDE(raw.get("latitude"), None)
    except BadValue as bad:
        raise BadValue(f"latitude: {bad}") from None
    try:
        longitude = LONGITUDE(raw.get("longitude"), None)
    except BadValue as bad:
        raise BadValue(f"longitude: {bad}") from None
    return {"latitude": latitude, "longitude": longitude}


def target(key: str, reader: Reader) -> Target:
    """Where a field goes: the catalogue property `key` and its reader."""
    spec = PROPERTIES[key]
    return spec.capability, spec.name, reader


def number_target(key: str, scale: Scale = SAME) -> Target:
    """Target for a number or fraction property converted by `scale`."""
    return target(key, number_reader(key, scale))


def unit_number_target(key: str, scales: Mapping[str, Scale]) -> Target:
    """Target for a number or fraction property in whichever of `scales`' units the value names."""
    return target(key, unit_number_reader(key, scales))


def enum_target(key: str, codes: Mapping[str, str]) -> Target:
    """Target for an enum property read through `codes`."""
    return target(key, enum_reader(key, codes))


# --- entries -------------------------------------------------------------------------

def put(data: Data, capability: str, name: str, entry: Entry) -> None:
    """Append `entry` to its property's list."""
    properties = data.get(capability)
    if properties is None:
        data[capability] = {name: [entry]}
        return
    entries = properties.get(name)
    if entries is None:
        properties[name] = [entry]
    else:
        entries.append(entry)


def read_into(data: Data, errors: list[ErrorItem], into: Target, field: str, raw: object,
              unit: object, timestamp: str) -> None:
    """Read one raw value into its property: data, or a failure entry (and error)."""
    capability, name, reader = into
    try:
        entry = {"data": reader(raw, unit), "timestamp": timestamp}
    except Trouble as trouble:
        entry, error = trouble.outcome(field, timestamp)
        if error is not None:
            errors.append(error)
    properties = data.get(capability)  # put(), inlined: this runs for every field
    if properties is None:
        data[capability] = {name: [entry]}
    elif name in properties:
        properties[name].append(entry)
    else:
        properties[name] = [entry]


def read_outcome(reader: Reader, field: str, raw: object, unit: object, timestamp: str) -> Outcome:
    """Like :func:`read_into`, for a value that is resolved with others before delivery."""
    try:
        return {"data": reader(raw, unit), "timestamp": timestamp}, None
    except Trouble as trouble:
        return trouble.outcome(field, timestamp)


def format_error(field: str, problem: str, timestamp: str) -> Outcome:
    """A format_error entry and its `errors` item."""
    return ({"failure": {"reason": FORMAT_ERROR, "description": f"{field}: {problem}"},
             "timestamp": timestamp},
            {"field": field, "reason": problem})


def oem_failure(reason: str, description: str, timestamp: str) -> Outcome:
    """An entry for a value the OEM marks unavailable or in error (not partial)."""
    return {"failure": {"reason": reason, "description": description}, "timestamp": timestamp}, None


def deliver(data: Data, errors: list[ErrorItem], capability: str, name: str,
            outcome: Outcome) -> None:
    """Put an outcome's entry into its property, and its error into `errors`."""
    entry, error = outcome
    put(data, capability, name, entry)
    if error is not None:
        errors.append(error)


def larger_of(outcomes: list[Outcome]) -> Outcome:
    """Of several number entries for one property, the one to deliver.

    A format_error wins (which value is larger cannot be told), then the largest
    data value (the first of equals), then the first OEM failure.
    """
    largest: Outcome | None = None
    for outcome in outcomes:
        entry, error = outcome
        if error is not None:
            return outcome
        if "data" in entry and (largest is None
                                or entry["data"]["value"] > largest[0]["data"]["value"]):
            largest = outcome
    return outcomes[0] if largest is None else largest


def combine_coordinates(halves: Mapping[str, Outcome], latitude_field: str,
                        longitude_field: str) -> Outcome:
    """One coordinates entry from separately read latitude and longitude entries.

    Its time is the later of the two. A half without the other is a format_error
    naming the missing field; a half that failed passes its failure on.
    """
    latitude, longitude = halves.get(latitude_field), halves.get(longitude_field)
    if latitude is None or longitude is None:
        present, missing = ((longitude, latitude_field) if latitude is None
                            else (latitude, longitude_field))
        return format_error(missing, "missing while the other half of the location is present",
                            present[0]["timestamp"])
    (latitude_entry, _), (longitude_entry, _) = latitude, longitude
    later = max(latitude_entry["timestamp"], longitude_entry["timestamp"])
    if "data" in latitude_entry and "data" in longitude_entry:  # the common case
        return ({"data": {"latitude": latitude_entry["data"],
                          "longitude": longitude_entry["data"]}, "timestamp": later}, None)
    failures = [half for half in (latitude, longitude) if "failure" in half[0]]
    entry, error = min(failures, key=lambda half: half[1] is None)  # format_error first
    return {"failure": entry["failure"], "timestamp": later}, error


def map_records(vin: str, records: Iterable[tuple[str, Any]], targets: Mapping[str, Target],
                coordinate_fields: tuple[str, str], fallback: Stamp) -> MapResult:
    """Map `(field, {"value", "unit"?, "timestamp"?})` records that each carry their own time.

    Fields in `targets` go to their property; the two `coordinate_fields`
    (latitude, longitude) combine into one coordinates entry; other fields are
    ignored. A record without a timestamp takes `fallback`; one whose timestamp
    cannot be read, or that is not an object, is a format_error at `fallback`.
    """
    data: Data = {}
    errors: list[ErrorItem] = []
    halves: dict[str, Outcome] = {}
    newest_ms = -1
    for field, record in records:
        into = targets.get(field)
        if into is None and field not in coordinate_fields:
            continue
        moment = datum_stamp(record.get("timestamp"), fallback) if type(record) is dict else None
        if moment is not None and into is not None:  # the common case
            epoch_ms, timestamp = moment
            read_into(data, errors, into, field, record.get("value"), record.get("unit"), timestamp)
        else:
            epoch_ms, timestamp = moment or fallback
            outcome = _record_outcome(field, record, moment, coordinate_fields, timestamp)
            if into is None:
                halves[field] = outcome
            else:
                deliver(data, errors, into[0], into[1], outcome)
        if epoch_ms > newest_ms:
            newest_ms = epoch_ms
    if halves:
        deliver(data, errors, "vehicle_location", "coordinates",
                combine_coordinates(halves, *coordinate_fields))
    return finish(vin, data, errors, newest_ms)


def _record_outcome(field: str, record: Any, moment: Stamp | None,
                    coordinate_fields: tuple[str, str], timestamp: str) -> Outcome:
    """The entry of a coordinate half, or of a record that is not an object or has a bad time."""
    if type(record) is not dict:
        return format_error(field, f"expected an object, got {show(record)}", timestamp)
    if moment is None:
        problem = f"unreadable timestamp {show(record.get('timestamp'))}"
        return format_error(field, problem, timestamp)
    half = LATITUDE if field == coordinate_fields[0] else LONGITUDE
    return read_outcome(half, field, record.get("value"), None, timestamp)
