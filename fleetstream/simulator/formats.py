"""Per-source encoders: a vehicle's state as that maker's raw payload (DATA-CONTRACTS §3).

Each `PayloadFormat` builds the payload as plain data and knows how its payloads
go wrong: an unreadable value (`spoil`), the maker's own invalid marker
(`mark_unavailable`, where the format has one) and a missing VIN (`drop_vin`).

Every message carries the fast-changing signals (position, speed, odometer,
state of charge or fuel); charging signals come while plugged in, and the slow
ones (locks, temperatures, tyres, ranges) in every `SNAPSHOT_EVERY`-th message
and whenever the vehicle changed mode.
"""
from __future__ import annotations

import base64
from random import Random
from typing import Any

import orjson

from fleetstream.mappers.proto import tesla_fleet_telemetry_pb2 as fleet_telemetry
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms
from fleetstream.simulator.vehicle import ACTIVE, COMPLETE, STARTING, UNPLUGGED, Vehicle

SNAPSHOT_EVERY = 6
KM_PER_MILE = 1.609344
UNREADABLE_VALUES = ("abc", "n/a", "", "12..5", "--")
TIRES = ("Fl", "Fr", "Rl", "Rr")

Payload = dict[str, Any]


def _uuid(rng: Random) -> str:
    """A random (version 4) UUID drawn from `rng`."""
    digits = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(digits[16], 16) % 4]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


class PayloadFormat:
    """How one source encodes a vehicle state, and how its payloads go wrong."""

    source: str
    #: source field names whose values `spoil` may make unreadable
    spoilable: frozenset[str]

    def encode(self, car: Vehicle, at_ms: int, snapshot: bool) -> Payload:
        """The payload for `car`'s state at `at_ms`; `snapshot` adds the slow signals."""
        raise NotImplementedError

    def fields(self, payload: Payload) -> list[tuple[str, dict[str, Any]]]:
        """(source field name, the dict holding its value) for each value in `payload`."""
        raise NotImplementedError

    def spoil(self, payload: Payload, rng: Random) -> None:
        """Replace one reading with a value no mapper can read ("abc" as an odometer)."""
        _, holder = rng.choice([f for f in self.fields(payload) if f[0] in self.spoilable])
        self._set_reading(holder, rng.choice(UNREADABLE_VALUES))

    def _set_reading(self, holder: dict[str, Any], value: str) -> None:
        holder["value"] = value

    def mark_unavailable(self, payload: Payload, rng: Random) -> bool:
        """Mark one value invalid the way the maker does; False if the format has no such marker."""
        return False

    def drop_vin(self, payload: Payload) -> None:
        del payload["vin"]

    def wire(self, payload: Payload) -> dict[str, str]:
        """The envelope's payload fields (DATA-CONTRACTS §1) for `payload`: JSON text here."""
        return {"payload": orjson.dumps(payload).decode()}

    def truncated(self, payload: Payload, rng: Random) -> dict[str, str]:
        """The envelope's payload fields for `payload` cut short somewhere."""
        text = self.wire(payload)["payload"]
        return {"payload": text[:rng.randrange(1, len(text))]}

    def companions(self, payload: Payload, at_ms: int, rng: Random) -> list[dict[str, str]]:
        """Payload fields of the records the maker sends beside a vehicle message (none here)."""
        return []


class Tesla(PayloadFormat):
    """Fleet-telemetry records: miles, mph, numbers often as strings."""

    source = "tesla"
    spoilable = frozenset({"VehicleSpeed", "Odometer", "Soc"})
    _charge_states = {UNPLUGGED: "DetailedChargeStateDisconnected", STARTING: "DetailedChargeStateStarting",
                      ACTIVE: "DetailedChargeStateCharging", COMPLETE: "DetailedChargeStateComplete"}

    def encode(self, car: Vehicle, at_ms: int, snapshot: bool) -> Payload:
        rng = car.rng

        def number(value: float, digits: int) -> dict[str, Any]:
            rounded = round(value, digits)
            return {"stringValue": str(rounded)} if rng.random() < 0.6 else {"doubleValue": rounded}

        data = [("VehicleSpeed", number(car.speed_kmh / KM_PER_MILE, 1)),
                ("Odometer", number(car.odometer_km / KM_PER_MILE, 2)),
                ("Location", {"locationValue": {"latitude": round(car.latitude, 6),
                                                "longitude": round(car.longitude, 6)}}),
                ("GpsHeading", number(car.heading, 1)),
                ("Soc", number(car.soc_pct, 2))]
        if snapshot or car.plugged_in:
            ac_kw, dc_kw = (0.0, car.charge_power_kw) if car.dc_charging else (car.charge_power_kw, 0.0)
            data += [("DetailedChargeState", {"stringValue": self._charge_states[car.charge_state]}),
                     ("ChargeLimitSoc", {"intValue": int(car.charge_limit_pct)}),
                     ("ACChargingPower", number(ac_kw, 1)), ("DCChargingPower", number(dc_kw, 1))]
        if snapshot:
            data += [("BatteryLevel", number(max(0.0, car.soc_pct - 0.5), 1)),
                     ("EstBatteryRange", number(car.electric_range_km / KM_PER_MILE, 1)),
                     ("Locked", {"booleanValue": car.locked}),
                     ("OutsideTemp", number(car.outside_c, 1)), ("InsideTemp", number(car.inside_c, 1))]
            data += [(f"TpmsPressure{tire}", number(kpa / 100, 2)) for tire, kpa in zip(TIRES, car.tires_kpa)]
        return {"vin": car.vin, "createdAt": iso_ms(at_ms), "isResend": False,
                "data": [{"key": key, "value": value} for key, value in data]}

    def fields(self, payload: Payload) -> list[tuple[str, dict[str, Any]]]:
        return [(datum["key"], datum) for datum in payload["data"]]

    def _set_reading(self, holder: dict[str, Any], value: str) -> None:
        holder["value"] = {"stringValue": value}

    def mark_unavailable(self, payload: Payload, rng: Random) -> bool:
        rng.choice(payload["data"])["value"] = {"invalid": True}
        return True


class TeslaTelemetry(Tesla):
    """The same records in fleet-telemetry's protobuf, as its Kafka dispatcher writes them.

    Vehicle data is record type ``V`` (`payload_b64` and `record_type` in the
    envelope); DetailedChargeState comes typed (an enum, as firmware 2024.38 and
    later sends it), and Gear, which the catalogue has no property for, now and
    then. Beside the vehicle data come ``connectivity`` records (about one in
    `CONNECTIVITY_EVERY` messages) and, rarely, an ``errors`` record.
    """

    source = "tesla_telemetry"
    CONNECTIVITY_EVERY = 20
    ERRORS_EVERY = 500
    _kinds = {"stringValue": "string_value", "intValue": "int_value", "longValue": "long_value",
              "floatValue": "float_value", "doubleValue": "double_value",
              "booleanValue": "boolean_value", "invalid": "invalid",
              "detailedChargeStateValue": "detailed_charge_state_value",
              "shiftStateValue": "shift_state_value"}

    def encode(self, car: Vehicle, at_ms: int, snapshot: bool) -> Payload:
        payload = super().encode(car, at_ms, snapshot)
        for datum in payload["data"]:
            if datum["key"] == "DetailedChargeState":
                datum["value"] = {"detailedChargeStateValue": datum["value"]["stringValue"]}
        if snapshot:
            gear = "ShiftStateD" if car.speed_kmh > 0 else "ShiftStateP"
            payload["data"].append({"key": "Gear", "value": {"shiftStateValue": gear}})
        return payload

    def wire(self, payload: Payload) -> dict[str, str]:
        return {"payload_b64": base64.b64encode(self.to_protobuf(payload)).decode("ascii"),
                "record_type": "V"}

    def truncated(self, payload: Payload, rng: Random) -> dict[str, str]:
        data = self.to_protobuf(payload)
        return {"payload_b64": base64.b64encode(data[:rng.randrange(1, len(data))]).decode(),
                "record_type": "V"}

    def to_protobuf(self, payload: Payload) -> bytes:
        """A fleet-telemetry `Payload` from the JSON form of the record."""
        record = fleet_telemetry.Payload(vin=payload.get("vin", ""))
        record.created_at.FromMilliseconds(to_epoch_ms(payload["createdAt"]))
        for datum in payload["data"]:
            item = record.data.add()
            item.key = fleet_telemetry.Field.Value(datum["key"])
            [(kind, raw)] = datum["value"].items()
            if kind == "locationValue":
                item.value.location_value.latitude = raw["latitude"]
                item.value.location_value.longitude = raw["longitude"]
            else:
                setattr(item.value, self._kinds[kind], raw)
        return record.SerializeToString()

    def companions(self, payload: Payload, at_ms: int, rng: Random) -> list[dict[str, str]]:
        sent = []
        vin = payload.get("vin", "")
        if rng.random() < 1 / self.CONNECTIVITY_EVERY:
            status = rng.choice((fleet_telemetry.CONNECTED, fleet_telemetry.DISCONNECTED))
            record = fleet_telemetry.VehicleConnectivity(
                vin=vin, connection_id=_uuid(rng), status=status,
                network_interface=rng.choice(("wifi", "cellular")))
            record.created_at.FromMilliseconds(at_ms)
            sent.append({"payload_b64": base64.b64encode(record.SerializeToString()).decode(),
                         "record_type": "connectivity"})
        if rng.random() < 1 / self.ERRORS_EVERY:
            errors = fleet_telemetry.VehicleErrors(vin=vin)
            errors.created_at.FromMilliseconds(at_ms)
            error = errors.errors.add(name="unsupported_field", body="field is not supported")
            error.created_at.FromMilliseconds(at_ms)
            error.tags["field_name"] = "SemitruckTpmsPressureRe1L0"
            sent.append({"payload_b64": base64.b64encode(errors.SerializeToString()).decode(),
                         "record_type": "errors"})
        return sent


class Bmw(PayloadFormat):
    """CarData streaming: descriptors with their own timestamps and loosely spelled units."""

    source = "bmw"
    _distance = "vehicle.vehicle.travelledDistance"
    _speed = "vehicle.vehicle.speed"
    _soc = "vehicle.drivetrain.batteryManagement.header"
    _fuel = "vehicle.drivetrain.fuelSystem.level"
    _location = "vehicle.cabin.infotainment.navigation.currentLocation."
    _charging = "vehicle.drivetrain.electricEngine."
    spoilable = frozenset({_distance, _speed, _soc, _fuel})
    _percent_units = ("%", "percent", "PERCENT")
    _pressure_units = ("kPa", "kpa")
    _temperature_units = ("celsius", "°C")
    _tires = ("row1.wheel.left", "row1.wheel.right", "row2.wheel.left", "row2.wheel.right")
    _charge_states = {UNPLUGGED: "NOCHARGING", STARTING: "CHARGINGACTIVE", ACTIVE: "CHARGINGACTIVE",
                      COMPLETE: "CHARGINGENDED"}

    def encode(self, car: Vehicle, at_ms: int, snapshot: bool) -> Payload:
        rng = car.rng
        now = _iso_seconds(at_ms)
        earlier = _iso_seconds(at_ms - rng.randrange(60_000))
        data: dict[str, dict[str, Any]] = {}

        def put(name: str, value: Any, unit: str | None = None, stamp: str = now) -> None:
            if isinstance(value, float) and rng.random() < 0.3:
                value = str(value)
            data[name] = {"value": value, "unit": unit, "timestamp": stamp} if unit else \
                {"value": value, "timestamp": stamp}

        put(self._distance, round(car.odometer_km, 1), "km")
        put(self._speed, round(car.speed_kmh, 1), "km/h")
        if car.combustion:
            put(self._fuel, round(car.fuel_pct, 1), rng.choice(self._percent_units))
        else:
            put(self._soc, round(car.soc_pct, 1), rng.choice(self._percent_units))
        put(self._location + "latitude", round(car.latitude, 6))
        put(self._location + "longitude", round(car.longitude, 6))
        put(self._location + "heading", round(car.heading, 1))
        if not car.combustion and (snapshot or car.plugged_in):
            put(self._charging + "charging.status", self._charge_states[car.charge_state])
            put(self._charging + "charging.level", car.charge_limit_pct, rng.choice(self._percent_units))
            put("vehicle.body.chargingPort.status", "CONNECTED" if car.plugged_in else "DISCONNECTED")
            put(self._charging + "remainingElectricRange", round(car.electric_range_km, 1), "km", earlier)
        if snapshot:
            put("vehicle.cabin.door.lock.status",
                rng.choice(("SECURED", "LOCKED")) if car.locked else "UNLOCKED")
            put("vehicle.cabin.hvac.outsideTemperature", round(car.outside_c, 1),
                rng.choice(self._temperature_units), earlier)
            for tire, kpa in zip(self._tires, car.tires_kpa):
                put(f"vehicle.chassis.axle.{tire}.tire.pressure", round(kpa, 1),
                    rng.choice(self._pressure_units), earlier)
        return {"vin": car.vin, "timestamp": now, "data": data}

    def fields(self, payload: Payload) -> list[tuple[str, dict[str, Any]]]:
        return list(payload["data"].items())


class Mercedes(PayloadFormat):
    """Container resources: string values, epoch-ms timestamps, numeric codes."""

    source = "mercedes"
    spoilable = frozenset({"odo", "soc", "tanklevelpercent"})
    _charge_states = {UNPLUGGED: ("3",), STARTING: ("0",), ACTIVE: ("0", "5", "6"), COMPLETE: ("1",)}
    _ignition_codes = {"lock": "0", "off": "1", "on": "4"}
    _tires = ("frontleft", "frontright", "rearleft", "rearright")

    def encode(self, car: Vehicle, at_ms: int, snapshot: bool) -> Payload:
        rng = car.rng
        values = [("odo", f"{car.odometer_km:.0f}"), ("positionLat", f"{car.latitude:.6f}"),
                  ("positionLong", f"{car.longitude:.6f}"), ("positionHeading", f"{car.heading:.0f}"),
                  ("ignitionstate", self._ignition_codes[car.ignition])]
        if car.combustion:
            values.append(("tanklevelpercent", f"{car.fuel_pct:.0f}"))
        else:
            values.append(("soc", f"{car.soc_pct:.0f}"))
        if not car.combustion and (snapshot or car.plugged_in):
            values += [("chargingstatus", rng.choice(self._charge_states[car.charge_state])),
                       ("maxSoc", f"{car.charge_limit_pct:.0f}"),
                       ("rangeelectric", f"{car.electric_range_km:.0f}")]
        if snapshot:
            values += [("doorlockstatusvehicle", rng.choice(("1", "2") if car.locked else ("0", "3"))),
                       ("outsidetemperature", f"{car.outside_c:.1f}")]
            values += [(f"tirepressure{tire}", f"{kpa:.1f}") for tire, kpa in zip(self._tires, car.tires_kpa)]
            if car.combustion:
                values.append(("rangeliquid", f"{car.fuel_range_km:.0f}"))
        return {"vin": car.vin,
                "resources": [{name: {"value": value, "timestamp": at_ms}} for name, value in values]}

    def fields(self, payload: Payload) -> list[tuple[str, dict[str, Any]]]:
        return [item for resource in payload["resources"] for item in resource.items()]


class Smartcar(PayloadFormat):
    """Webhook v4 VEHICLE_STATE events with signals; units by the car's region."""

    source = "smartcar"
    spoilable = frozenset({"odometer-traveleddistance", "tractionbattery-stateofcharge",
                           "fuel-percentremaining"})
    _charge_states = {UNPLUGGED: "NOT_CHARGING", STARTING: "CHARGING", ACTIVE: "CHARGING",
                      COMPLETE: "FULLY_CHARGED"}
    _errors = ({"code": "VEHICLE_NOT_CAPABLE", "type": "COMPATIBILITY"},
               {"code": "UNKNOWN_ISSUE", "type": "UPSTREAM"},
               {"code": "UNREACHABLE", "type": "VEHICLE_STATE"})

    def encode(self, car: Vehicle, at_ms: int, snapshot: bool) -> Payload:
        rng = car.rng
        distance_unit, per_km = ("miles", 1 / KM_PER_MILE) if car.city.uses_miles else ("km", 1.0)

        def share(percent: float) -> dict[str, Any]:
            if rng.random() < 0.2:
                return {"unit": "fraction", "value": round(percent / 100, 4)}
            return {"unit": "percent", "value": round(percent, 1)}

        signals: list[tuple[str, dict[str, Any]]] = [
            ("odometer-traveleddistance",
             {"unit": distance_unit, "value": round(car.odometer_km * per_km, 1)}),
            ("location-preciselocation",
             {"latitude": round(car.latitude, 6), "longitude": round(car.longitude, 6),
              "heading": round(car.heading)})]
        if car.combustion:
            signals.append(("fuel-percentremaining", share(car.fuel_pct)))
        else:
            signals.append(("tractionbattery-stateofcharge", share(car.soc_pct)))
        if not car.combustion and (snapshot or car.plugged_in):
            signals += [("charge-chargingstate", {"value": self._charge_states[car.charge_state]}),
                        ("charge-ischargingcableconnected", {"value": car.plugged_in}),
                        ("charge-chargelimit", share(car.charge_limit_pct)),
                        ("tractionbattery-range", {"unit": distance_unit,
                                                   "value": round(car.electric_range_km * per_km, 1)})]
        if snapshot:
            signals.append(("closure-islocked", {"value": car.locked}))
        retrieved_ms = at_ms + rng.randrange(50, 400)
        return {"eventId": _uuid(rng), "eventType": "VEHICLE_STATE",
                "data": {"vehicle": {"id": car.vehicle_id, "make": car.model.make, "model": car.model.name,
                                     "vin": car.vin},
                         "signals": [{"code": code, "body": body, "status": {"value": "SUCCESS"},
                                      "meta": {"oemUpdatedAt": at_ms, "retrievedAt": retrieved_ms}
                                      if rng.random() < 0.9 else {"retrievedAt": retrieved_ms}}
                                     for code, body in signals]},
                "meta": {"version": "4.0", "deliveryId": _uuid(rng), "deliveredAt": retrieved_ms}}

    def fields(self, payload: Payload) -> list[tuple[str, dict[str, Any]]]:
        return [(signal["code"], signal) for signal in payload["data"]["signals"]]

    def _set_reading(self, holder: dict[str, Any], value: str) -> None:
        holder["body"]["value"] = value

    def mark_unavailable(self, payload: Payload, rng: Random) -> bool:
        signal = rng.choice(payload["data"]["signals"])
        del signal["body"]
        signal["status"] = {"value": "ERROR", "error": dict(rng.choice(self._errors))}
        return True

    def drop_vin(self, payload: Payload) -> None:
        del payload["data"]["vehicle"]["vin"]


def verify_event(rng: Random, at_ms: int) -> Payload:
    """A smartcar VERIFY event (the webhook's challenge): no vehicle, no data to deliver."""
    return {"eventId": _uuid(rng), "eventType": "VERIFY",
            "data": {"challenge": f"{rng.getrandbits(64):016x}"},
            "meta": {"version": "4.0", "deliveryId": _uuid(rng), "deliveredAt": at_ms}}


def _iso_seconds(epoch_ms: int) -> str:
    """`2026-03-01T08:15:30Z`: CarData's whole-second timestamps."""
    return iso_ms(epoch_ms)[:19] + "Z"


FORMATS: dict[str, PayloadFormat] = {
    fmt.source: fmt for fmt in (Tesla(), Bmw(), Mercedes(), Smartcar(), TeslaTelemetry())}
