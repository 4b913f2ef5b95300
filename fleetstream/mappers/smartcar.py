"""Smartcar webhooks, version 4 (DATA-CONTRACTS §3, smartcar).

Only ``eventType: VEHICLE_STATE`` carries data, as ``data.signals``: each with a
`code`, a `body` (``{"value", "unit"}``, or the location itself), a `status`
and a `meta`. Other events (VERIFY, VEHICLE_ERROR, and any newer type) are
ignored: counted, not delivered, not failures. A signal whose status is ERROR
becomes a failure entry: ``unavailable`` for VEHICLE_NOT_CAPABLE, ``oem_error``
otherwise. A signal's time is ``meta.oemUpdatedAt``, else ``meta.retrievedAt``,
else the receive time. Numbers honour their body's unit.
"""
from __future__ import annotations

from typing import Any, Mapping

from fleetstream.mappers.base import IGNORED, MapResult
from fleetstream.mappers.entries import (OEM_ERROR, UNAVAILABLE, ErrorItem, Outcome, Target,
                                         Unreadable, datum_stamp, deliver, enum_target, finish,
                                         format_error, message_stamp, number_target, oem_failure,
                                         read_coordinates, read_into, read_message, require_list,
                                         require_object, require_vin, show, target,
                                         unit_number_target)
from fleetstream.schemas.mapped import Data
from fleetstream.schemas.units import MILES_TO_KM, PERCENT_TO_FRACTION, SAME

SOURCE = "smartcar"

_DISTANCE = {"km": SAME, "miles": MILES_TO_KM}
_SHARE = {"percent": PERCENT_TO_FRACTION, "fraction": SAME}
_LOCATION = "location-preciselocation"


#: code -> the property it feeds, read from the body's ``value`` and ``unit``
_TARGETS: Mapping[str, Target] = {
    "odometer-traveleddistance": unit_number_target("diagnostics.odometer", _DISTANCE),
    "tractionbattery-stateofcharge": unit_number_target("charging.battery_level", _SHARE),
    "tractionbattery-range": unit_number_target("charging.estimated_range", _DISTANCE),
    "fuel-percentremaining": unit_number_target("diagnostics.fuel_level", _SHARE),
    "charge-chargingstate": enum_target("charging.status", {
        "CHARGING": "charging", "FULLY_CHARGED": "charging_complete",
        "NOT_CHARGING": "not_charging"}),
    "charge-ischargingcableconnected": enum_target(
        "charging.plugged_in", {"true": "plugged_in", "false": "disconnected"}),
    "charge-chargelimit": unit_number_target("charging.charge_limit", _SHARE),
    "closure-islocked": enum_target("doors.locks_state", {"true": "locked", "false": "unlocked"}),
    #: the body is the location itself
    _LOCATION: target("vehicle_location.coordinates", read_coordinates),
}
_HEADING = number_target("vehicle_location.heading")


def map_payload(payload: str | bytes, received_at_ms: int,
                record_type: str | None = None) -> MapResult:
    """Map one webhook delivery (`record_type` is not read); never raises."""
    return read_message(payload, received_at_ms, _map_event)


def _map_event(event: dict[str, Any], received_at_ms: int) -> MapResult:
    event_type = event.get("eventType")
    if type(event_type) is not str:
        raise Unreadable("eventType", f"expected the event type, got {show(event_type)}")
    if event_type != "VEHICLE_STATE":
        return MapResult(None, IGNORED, {}, [], None)
    body = require_object(event.get("data"), "data")
    vin = require_vin(require_object(body.get("vehicle"), "data.vehicle").get("vin"),
                      "data.vehicle.vin")
    received = message_stamp(None, received_at_ms, "received_at")
    data: Data = {}
    errors: list[ErrorItem] = []
    newest_ms = -1
    for signal in require_list(body.get("signals"), "data.signals"):
        code = signal.get("code") if type(signal) is dict else None
        into = _TARGETS.get(code) if type(code) is str else None
        if into is None:
            continue
        raw_time = _signal_time(signal.get("meta"))
        moment = datum_stamp(raw_time, received)
        epoch_ms, timestamp = moment or received
        if epoch_ms > newest_ms:
            newest_ms = epoch_ms
        status = signal.get("status")
        if moment is None:
            deliver(data, errors, into[0], into[1],
                    format_error(code, f"unreadable timestamp {show(raw_time)}", timestamp))
        elif type(status) is dict and status.get("value") == "ERROR":
            deliver(data, errors, into[0], into[1],
                    _error_outcome(code, status.get("error"), timestamp))
        elif code == _LOCATION:
            signal_body = signal.get("body")
            read_into(data, errors, into, code, signal_body, None, timestamp)
            heading = signal_body.get("heading") if type(signal_body) is dict else None
            if heading is not None:
                read_into(data, errors, _HEADING, code, heading, None, timestamp)
        else:  # the body is {"value", "unit"}
            signal_body = signal.get("body")
            if type(signal_body) is dict:
                read_into(data, errors, into, code, signal_body.get("value"),
                          signal_body.get("unit"), timestamp)
            else:
                problem = f"body is not an object: {show(signal_body)}"
                deliver(data, errors, into[0], into[1], format_error(code, problem, timestamp))
    return finish(vin, data, errors, newest_ms)


def _signal_time(meta: object) -> object:
    """`oemUpdatedAt`, else `retrievedAt`, else None (the receive time)."""
    if type(meta) is not dict:
        return None
    updated = meta.get("oemUpdatedAt")
    return meta.get("retrievedAt") if updated is None else updated


def _error_outcome(code: str, error: object, timestamp: str) -> Outcome:
    """The failure entry for a signal whose status is ERROR."""
    if type(error) is not dict:
        return oem_failure(OEM_ERROR, f"{code}: error {show(error)}", timestamp)
    kind, error_code = (value if type(value) is str else show(value)
                        for value in (error.get("type"), error.get("code")))
    reason = UNAVAILABLE if error_code == "VEHICLE_NOT_CAPABLE" else OEM_ERROR
    return oem_failure(reason, f"{code}: {kind} {error_code}", timestamp)
