"""Geofences (DATA-CONTRACTS §11): the configured shapes, their validation, and the event.

An application's configuration may declare

    geofences:
      - {id: depot, circle: {lat: 48.137, lon: 11.575, radius_m: 300}}
      - {id: yard, polygon: [[48.1, 11.5], [48.1, 11.6], [48.2, 11.6]], hysteresis_m: 10}
    geofence_hysteresis_m: 25      # the application's default (25 m when absent)

`parse_geofences` checks them at start-up (ConfigError naming the entry and the
fix); `geofence_event` serialises one crossing as the application receives it.
The rules that decide crossings are in `fleetstream.transforms.geofences`.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import orjson

from fleetstream.schemas.errors import ConfigError, refuse_unknown
from fleetstream.schemas.timestamps import iso_ms

__all__ = ["Circle", "Polygon", "Geofence", "DEFAULT_HYSTERESIS_M", "parse_geofences",
           "parse_hysteresis", "geofence_event", "geofence_message_id"]

#: how far outside a fence a vehicle inside it must be before it exits (metres)
DEFAULT_HYSTERESIS_M = 25.0
#: event format version (DATA-CONTRACTS §11)
VERSION = 1
ENTER, EXIT = "enter", "exit"
_FENCE_KEYS = {"id", "circle", "polygon", "hysteresis_m"}
_CIRCLE_KEYS = {"lat", "lon", "radius_m"}
#: a polygon with more vertices than this is refused (the self-intersection check is
#: quadratic, and each location update may test every edge)
MAX_POLYGON_POINTS = 1_000


@dataclass(frozen=True, slots=True)
class Circle:
    """A circle on the sphere: centre in degrees, radius in metres."""

    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class Polygon:
    """A simple polygon: its vertices as (lat, lon) in degrees, not closed (last != first)."""

    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Geofence:
    """One configured fence."""

    id: str
    shape: Circle | Polygon
    #: an inside vehicle exits only once this far outside the boundary (metres)
    hysteresis_m: float = DEFAULT_HYSTERESIS_M


def parse_hysteresis(raw: Any, where: str) -> float:
    """A hysteresis margin in metres (>= 0)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) \
            or raw < 0:
        raise ConfigError(f"{where}: expected a number of metres >= 0 (e.g. 25), got {raw!r}")
    return float(raw)


def parse_geofences(raw: Any, where: str,
                    default_hysteresis_m: float = DEFAULT_HYSTERESIS_M) -> tuple[Geofence, ...]:
    """Validate an application's `geofences:` list; ConfigError names the entry and the fix."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of {{id, circle: {{lat, lon, radius_m}}}} "
                          f"or {{id, polygon: [[lat, lon], ...]}}")
    fences: list[Geofence] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        fence = _geofence(entry, f"{where}[{index}]", default_hysteresis_m)
        if fence.id in seen:
            raise ConfigError(f"{where}[{index}]: duplicate geofence id {fence.id!r}; ids must "
                              f"be unique within the application")
        seen.add(fence.id)
        fences.append(fence)
    return tuple(fences)


def _geofence(entry: Any, where: str, default_hysteresis_m: float) -> Geofence:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping {{id, circle: ...}} or "
                          f"{{id, polygon: ...}}")
    fence_id = entry.get("id")
    if not isinstance(fence_id, str) or not fence_id or len(fence_id) > 128 \
            or any(c in fence_id for c in ": \t\n"):
        raise ConfigError(f"{where}.id: expected a non-empty name of up to 128 characters "
                          f"without ':' or spaces, got {fence_id!r}")
    where = f"{where} ({fence_id})"
    refuse_unknown(where, entry, _FENCE_KEYS)
    shapes = [key for key in ("circle", "polygon") if key in entry]
    if len(shapes) != 1:
        raise ConfigError(f"{where}: give exactly one of circle: {{lat, lon, radius_m}} or "
                          f"polygon: [[lat, lon], ...]")
    shape = (_circle(entry["circle"], f"{where}.circle") if shapes[0] == "circle"
             else _polygon(entry["polygon"], f"{where}.polygon"))
    hysteresis = (parse_hysteresis(entry["hysteresis_m"], f"{where}.hysteresis_m")
                  if "hysteresis_m" in entry else default_hysteresis_m)
    return Geofence(fence_id, shape, hysteresis)


def _circle(raw: Any, where: str) -> Circle:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected {{lat, lon, radius_m}}")
    refuse_unknown(where, raw, _CIRCLE_KEYS)
    missing = sorted(_CIRCLE_KEYS - set(raw))
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}; expected {{lat, lon, radius_m}}")
    lat, lon = _coordinate(raw["lat"], raw["lon"], where)
    radius = raw["radius_m"]
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) \
            or not math.isfinite(radius) or radius <= 0:
        raise ConfigError(f"{where}.radius_m: expected a number of metres > 0, got {radius!r}")
    if radius > 5_000_000:
        raise ConfigError(f"{where}.radius_m: {radius} m is more than 5,000 km; use a "
                          f"polygon or a smaller circle")
    return Circle(lat, lon, float(radius))


def _coordinate(lat: Any, lon: Any, where: str) -> tuple[float, float]:
    for name, value, limit in (("lat", lat, 90), ("lon", lon, 180)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not -limit <= value <= limit:
            raise ConfigError(f"{where}: {name} must be a number of degrees in "
                              f"[-{limit}, {limit}], got {value!r}"
                              + (" (lat comes first: [lat, lon])" if name == "lat" else ""))
    return float(lat), float(lon)


def _polygon(raw: Any, where: str) -> Polygon:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of [lat, lon] points")
    points: list[tuple[float, float]] = []
    for index, point in enumerate(raw):
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise ConfigError(f"{where}[{index}]: expected [lat, lon], got {point!r}")
        points.append(_coordinate(point[0], point[1], f"{where}[{index}]"))
    if len(points) > 1 and points[0] == points[-1]:
        points.pop()            # a closed ring: the last point repeats the first
    if len(set(points)) < 3:
        raise ConfigError(f"{where}: a polygon needs at least 3 distinct points, got "
                          f"{len(set(points))}")
    if len(points) > MAX_POLYGON_POINTS:
        raise ConfigError(f"{where}: {len(points)} points; at most {MAX_POLYGON_POINTS}, "
                          f"simplify the polygon")
    first_lon = points[0][1]
    unwrapped = [first_lon + (lon - first_lon + 180.0) % 360.0 - 180.0 for _, lon in points]
    if max(unwrapped) - min(unwrapped) >= 180.0:
        raise ConfigError(f"{where}: the polygon spans 180 degrees of longitude or more; split "
                          f"it into smaller polygons")
    crossing = _self_intersection(points)
    if crossing is not None:
        i, j = crossing
        raise ConfigError(f"{where}: the polygon intersects itself (edge {i}-{i + 1} crosses "
                          f"edge {j}-{(j + 1) % len(points)}); list its points in order "
                          f"around the boundary")
    return Polygon(tuple(points))


def _self_intersection(points: list[tuple[float, float]]) -> tuple[int, int] | None:
    """The first pair of edges that touch or cross, other than neighbours at their shared
    vertex (in degrees, with longitudes unwrapped around the first point)."""
    lat0, lon0 = points[0]
    flat = [(lat, lon0 + (lon - lon0 + 180.0) % 360.0 - 180.0) for lat, lon in points]
    n = len(flat)
    edges = [(flat[i], flat[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                # neighbours: they share one vertex; they overlap only if collinear and folded
                if _folds_back(edges[i], edges[j]):
                    return i, j
                continue
            if _segments_touch(*edges[i], *edges[j]):
                return i, j
    return None


def _orientation(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _on_segment(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> bool:
    return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])


def _segments_touch(p1: tuple[float, float], p2: tuple[float, float],
                    q1: tuple[float, float], q2: tuple[float, float]) -> bool:
    d1, d2 = _orientation(q1, q2, p1), _orientation(q1, q2, p2)
    d3, d4 = _orientation(p1, p2, q1), _orientation(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return ((d1 == 0 and _on_segment(q1, q2, p1)) or (d2 == 0 and _on_segment(q1, q2, p2))
            or (d3 == 0 and _on_segment(p1, p2, q1)) or (d4 == 0 and _on_segment(p1, p2, q2)))


def _folds_back(first: tuple, second: tuple) -> bool:
    """Two consecutive edges that run back over each other (a spike of zero width)."""
    shared = set(first) & set(second)
    if len(shared) != 1:
        return len(shared) == 2     # the same edge twice
    (vertex,) = shared
    a = first[0] if first[1] == vertex else first[1]
    b = second[0] if second[1] == vertex else second[1]
    if _orientation(vertex, a, b) != 0:
        return False
    return (a[0] - vertex[0]) * (b[0] - vertex[0]) + (a[1] - vertex[1]) * (b[1] - vertex[1]) > 0


def geofence_message_id(application_id: str, vehicle_id: str, geofence_id: str, event: str,
                        timestamp_ms: int) -> str:
    """A crossing's id: a pure function of the application, the vehicle id it sees (never
    the VIN of a pseudonymous application: the id must not let anyone test VINs against
    it), the fence, the event and its time; a replay or retry gives the same id."""
    return hashlib.blake2b(
        f"geofence/{application_id}/{vehicle_id}/{geofence_id}/{event}/{timestamp_ms}".encode(),
        digest_size=16).hexdigest()


def geofence_event(application_id: str, vehicle_id: str, geofence_id: str, event: str,
                   timestamp_ms: int, latitude: float, longitude: float) -> bytes:
    """The serialised event (DATA-CONTRACTS §11), `vin` being the vehicle id the application
    sees (`Application.vehicle_id`)."""
    return orjson.dumps({
        "version": VERSION, "type": "geofence",
        "message_id": geofence_message_id(application_id, vehicle_id, geofence_id, event,
                                          timestamp_ms),
        "application_id": application_id, "vin": vehicle_id, "geofence_id": geofence_id,
        "event": event, "timestamp": iso_ms(timestamp_ms),
        "location": {"latitude": latitude, "longitude": longitude}})
