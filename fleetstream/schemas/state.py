"""The latest state of every vehicle (DATA-CONTRACTS §10): what is kept, and the Redis key layout.

Pure functions over plain data, shared by the writer (`fleetstream.io.redis.state`, fed by
the jobs) and the reader (`fleetstream api`); docs/state.md describes the layout:

* `fs:state:{vin}`: a hash per vehicle. One field per property (`capability.property`),
  or per instance where a property has several (`diagnostics.tire_pressures|front_left`:
  one per `location`). Each value is the entry's timestamp as 13 zero-padded digits of
  epoch milliseconds followed by the entry's JSON (`{"data", "timestamp"}`), so that the
  write script compares timestamps as strings without decoding JSON.
* `fs:geo`: a geo index (GEOADD) of every vehicle's newest `vehicle_location.coordinates`,
  member = VIN.
* `fs:geofence:{application_id}:{geofence_id}`: a stream of one application's geofence
  events (§11), written by the streaming job, entry id = the event's timestamp in ms.

State is keyed by VIN and the same for every application: permissions and activations
are applied when it is read. Only entries with `data` are state; failure entries reach
customers in the stream only. Of two entries at the same timestamp the one already kept
stays (so a replay changes nothing).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import orjson

from fleetstream.schemas.mapped import Data
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms

STATE_KEY_PREFIX = "fs:state:"
GEO_KEY = "fs:geo"
GEOFENCE_KEY_PREFIX = "fs:geofence:"
#: properties with several instances: the data field that tells the instances apart
INSTANCE_FIELDS: Mapping[tuple[str, str], str] = {("diagnostics", "tire_pressures"): "location"}
LOCATION = ("vehicle_location", "coordinates")
LOCATION_FIELD = "vehicle_location.coordinates"
#: digits of the timestamp prefix of a stored value (epoch ms up to the year 2286)
TS_DIGITS = 13
_MAX_TS = 10 ** TS_DIGITS - 1
#: GEOADD takes latitudes up to this (Web Mercator); locations nearer the poles are not indexed
GEO_MAX_LATITUDE = 85.05112878


class StateUpdate(NamedTuple):
    """One property (instance) to keep if it is newer than what is kept."""

    field: str          # hash field: "capability.property" or "capability.property|instance"
    value: bytes        # 13-digit epoch ms + the entry's JSON
    geo: str            # "lon,lat" for a location to index, else ""


def state_key(vin: str) -> str:
    return STATE_KEY_PREFIX + vin


def geofence_events_key(application_id: str, geofence_id: str) -> str:
    return f"{GEOFENCE_KEY_PREFIX}{application_id}:{geofence_id}"


def state_field(capability: str, prop: str, entry: Mapping[str, Any]) -> str | None:
    """The hash field an entry is kept under; None when an instance has no readable name."""
    instance_field = INSTANCE_FIELDS.get((capability, prop))
    if instance_field is None:
        return f"{capability}.{prop}"
    data = entry.get("data")
    instance = data.get(instance_field) if isinstance(data, dict) else None
    if not isinstance(instance, str) or not instance or "|" in instance:
        return None
    return f"{capability}.{prop}|{instance}"


#: field -> (13-digit epoch ms prefix, entry): a message's newest entries, not yet encoded
NewestEntries = dict[str, tuple[bytes, dict[str, Any]]]


def state_updates(data: Data) -> list[StateUpdate]:
    """What a message (or document) changes in its vehicle's state: per field its newest
    entry with `data`, failure entries and unreadable timestamps left out."""
    return [state_update(field, prefix, entry)
            for field, (prefix, entry) in newest_entries(data).items()]


def state_update(field: str, prefix: bytes, entry: dict[str, Any]) -> StateUpdate:
    """The update of one of `newest_entries`: the entry's JSON encoded (and a location's geo)."""
    return StateUpdate(field, prefix + orjson.dumps(entry),
                       _geo(entry) if field == LOCATION_FIELD else "")


def newest_entries(data: Data) -> NewestEntries:
    """`state_updates` before encoding: per field the newest entry with `data` and its
    timestamp prefix (a writer that coalesces messages encodes only the entries it keeps)."""
    newest: NewestEntries = {}
    #: timestamp text -> its 13-digit prefix: a message's entries mostly share one
    prefixes: dict[str, bytes] = {}
    for capability, properties in data.items():
        for prop, entries in properties.items():
            name = None if (capability, prop) in INSTANCE_FIELDS else f"{capability}.{prop}"
            for entry in entries:
                if "data" not in entry:
                    continue
                stamp = entry.get("timestamp")
                prefix = prefixes.get(stamp) if type(stamp) is str else None
                if prefix is None:
                    try:
                        prefix = b"%013d" % min(max(to_epoch_ms(stamp), 0), _MAX_TS)
                    except (TypeError, ValueError, OverflowError):
                        continue
                    if type(stamp) is str:
                        prefixes[stamp] = prefix
                field = name or state_field(capability, prop, entry)
                if field is not None and (field not in newest or newest[field][0] < prefix):
                    newest[field] = prefix, entry
    return newest


def _geo(entry: Mapping[str, Any]) -> str:
    data = entry["data"]
    try:
        lat, lon = float(data["latitude"]), float(data["longitude"])
    except (TypeError, KeyError, ValueError):
        return ""
    if not (abs(lat) <= GEO_MAX_LATITUDE and abs(lon) <= 180.0):
        return ""
    return f"{lon!r},{lat!r}"


def document_updates(document: bytes | Mapping[str, Any]) -> tuple[str, list[StateUpdate]]:
    """(vin, updates) of a delivered document (DATA-CONTRACTS §4)."""
    doc = orjson.loads(document) if isinstance(document, (bytes, str)) else document
    return doc["vin"], state_updates(doc.get("data") or {})


def value_ms(value: bytes) -> int:
    """The timestamp (epoch ms) of a stored value."""
    return int(value[:TS_DIGITS])


def state_answer(vehicle_id: str, stored: Mapping[bytes, bytes],
                 permitted: Mapping[str, frozenset[str]]) -> dict[str, Any] | None:
    """`{"vin", "updated_at", "data"}` of the permitted properties of a stored hash (§10);
    None when nothing permitted is kept."""
    flat = [part for item in stored.items() for part in item]
    body = state_answer_json(vehicle_id, flat, AnswerLayouts(permitted))
    return None if body is None else orjson.loads(body)


class AnswerLayouts(dict):
    """Per tuple of hash field names (in the order Redis sends them): how the permitted
    ones' values join into the answer's `data`, as (value index, JSON before the value)
    pairs sorted by field name plus the closing JSON, or None when none is permitted. The
    writer adds fields in the same order to most vehicles, so the layouts are few; they are
    filled as they are met (at most `MAX_LAYOUTS` kept)."""

    MAX_LAYOUTS = 4096

    def __init__(self, permitted: Mapping[str, frozenset[str]]) -> None:
        super().__init__()
        self.permitted = permitted

    def __missing__(self, names: tuple[bytes, ...]) -> tuple[list[tuple[int, bytes]], bytes] | None:
        found = self._layout(names)
        if len(self) < self.MAX_LAYOUTS:
            self[names] = found
        return found

    def _layout(self, names: tuple[bytes, ...]) -> tuple[list[tuple[int, bytes]], bytes] | None:
        slots: list[tuple[int, bytes]] = []
        open_capability = open_property = None
        for name, index in sorted(zip(names, range(len(names)))):
            capability, prop = _property_of(name)
            if prop not in self.permitted.get(capability, ()):
                continue
            if capability != open_capability:
                before = (b'{"' if open_capability is None else b']},"') + \
                    b'%s":{"%s":[' % (capability.encode(), prop.encode())
                open_capability, open_property = capability, prop
            elif prop != open_property:
                before = b'],"%s":[' % prop.encode()
                open_property = prop
            else:
                before = b","
            slots.append((index, before))
        return (slots, b"]}}}") if slots else None


def state_answer_json(vehicle_id: str, flat: Sequence[bytes],
                      layouts: AnswerLayouts) -> bytes | None:
    """The JSON of `state_answer` from a hash as Redis sends it (`[field, value, ...]`), put
    together from the stored entries' JSON as it is (no decoding); `vehicle_id` must need no
    JSON escaping (the API lets only [A-Za-z0-9-] in). Fields sorted by name keep each
    capability's and each property's entries together."""
    layout = layouts[tuple(flat[0::2])]
    if layout is None:
        return None
    slots, closing = layout
    values = flat[1::2]
    parts: list[bytes] = []
    newest = b""
    for index, before in slots:
        value = values[index]
        parts += (before, value[TS_DIGITS:])
        stamp = value[:TS_DIGITS]          # zero-padded: compares as text
        if stamp > newest:
            newest = stamp
    head = b'{"vin":"%s","updated_at":"%s","data":' % (vehicle_id.encode(),
                                                      iso_ms(int(newest)).encode())
    return b"".join((head, *parts, closing))


def property_entries(stored: Iterable[tuple[bytes, bytes]], capability: str,
                     prop: str) -> list[Any]:
    """The stored entries of one property (each instance's), as JSON fragments."""
    return [orjson.Fragment(value[TS_DIGITS:]) for name, value in sorted(stored)
            if _property_of(name) == (capability, prop)]


def property_fields(capability: str, prop: str) -> tuple[str, bool]:
    """(field or field prefix, whether it is a prefix) of a property's instances."""
    if (capability, prop) in INSTANCE_FIELDS:
        return f"{capability}.{prop}|", True
    return f"{capability}.{prop}", False


#: field name -> (capability, property): the names are few (catalogue x instances)
_PROPERTY_OF: dict[bytes | str, tuple[str, str]] = {}


def _property_of(name: bytes | str) -> tuple[str, str]:
    known = _PROPERTY_OF.get(name)
    if known is not None:
        return known
    text = name.decode(errors="replace") if isinstance(name, bytes) else name
    capability, _, rest = text.partition(".")
    found = capability, rest.partition("|")[0]
    if len(_PROPERTY_OF) < 4096:
        _PROPERTY_OF[name] = found
    return found
