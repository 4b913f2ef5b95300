"""The geofence rule, as plain functions over plain data (no Beam).

Given the fences a vehicle is inside and its next reported location, `FenceIndex.step`
returns the fences it is inside now and the crossings (`enter` / `exit`) between.

Hysteresis (a Schmitt trigger on the distance to the boundary): a vehicle outside a
fence enters it as soon as a reported location is inside (on the boundary counts as
inside); a vehicle inside exits only once a location is more than the fence's
`hysteresis_m` outside the boundary. A location in the band between changes nothing, so
GPS jitter around a boundary gives one enter, not a storm of enters and exits, and
enters and exits of a fence always alternate, starting with an enter.

Distances are metres on a sphere of the Earth's mean radius: great-circle (haversine)
for circles; polygons are projected once onto a local equirectangular plane around their
bounding box's centre (exact enough for fences up to a few hundred kilometres across;
longitudes are unwrapped, so a fence may straddle the antimeridian).

Cost per location: `FenceIndex` puts every fence's bounding box, widened by its
hysteresis, into a grid of cells; a location is tested exactly only against the fences
whose box holds it, plus none else: a fence it is inside whose box does not hold it is
more than its hysteresis outside, an exit without further arithmetic. See
docs/geofences.md and benchmarks/geofence_bench.py.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from fleetstream.schemas.geofences import ENTER, EXIT, Circle, Geofence, Polygon
from fleetstream.schemas.timestamps import to_epoch_ms

#: mean Earth radius (IUGG), metres
EARTH_RADIUS_M = 6_371_008.8
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
#: a fence whose box covers more grid cells than this is tested for every location
_MAX_CELLS_PER_FENCE = 256


class Crossing(NamedTuple):
    """A vehicle entering or leaving a fence at a reported location."""

    geofence_id: str
    event: str          # ENTER or EXIT
    timestamp_ms: int
    latitude: float
    longitude: float


class Location(NamedTuple):
    """A reported location."""

    timestamp_ms: int
    latitude: float
    longitude: float


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _wrap(dlon: float) -> float:
    """A longitude difference in [-180, 180)."""
    return (dlon + 180.0) % 360.0 - 180.0


class _Fence:
    """One fence, prepared: its exact tests, and its box (widened by the hysteresis) as
    offsets in degrees from its reference point (lat0, lon0)."""

    __slots__ = ("id", "hysteresis_m", "lat0", "lon0", "box", "circle", "kx", "xy")

    def __init__(self, fence: Geofence) -> None:
        self.id = fence.id
        self.hysteresis_m = fence.hysteresis_m
        shape = fence.shape
        if isinstance(shape, Circle):
            self.circle = shape
            self.lat0, self.lon0 = shape.lat, shape.lon
            reach = (shape.radius_m + fence.hysteresis_m) / EARTH_RADIUS_M   # radians
            dlat = math.degrees(reach)
            cos_lat = math.cos(math.radians(shape.lat))
            # a spherical cap's longitude half-width; the whole circle of longitudes when
            # it reaches over a pole
            dlon = (180.0 if math.sin(reach) >= cos_lat
                    else math.degrees(math.asin(math.sin(reach) / cos_lat)))
            self.box = (-dlat * 1.001, dlat * 1.001, -dlon * 1.001, dlon * 1.001)
            self.kx = 0.0
            self.xy: tuple[tuple[float, float], ...] = ()
        else:
            assert isinstance(shape, Polygon)
            self.circle = None
            lats = [lat for lat, _ in shape.points]
            first_lon = shape.points[0][1]
            lons = [first_lon + _wrap(lon - first_lon) for _, lon in shape.points]
            self.lat0 = (min(lats) + max(lats)) / 2
            self.lon0 = (min(lons) + max(lons)) / 2
            self.kx = _M_PER_DEG * math.cos(math.radians(self.lat0))
            self.xy = tuple((_wrap(lon - self.lon0) * self.kx, (lat - self.lat0) * _M_PER_DEG)
                            for lat, lon in shape.points)
            margin_lat = fence.hysteresis_m / _M_PER_DEG
            margin_lon = fence.hysteresis_m / max(self.kx, 1e-9)
            self.box = (min(lats) - self.lat0 - margin_lat, max(lats) - self.lat0 + margin_lat,
                        min(lons) - self.lon0 - margin_lon, max(lons) - self.lon0 + margin_lon)

    def in_box(self, lat: float, lon: float) -> bool:
        dlat = lat - self.lat0
        box = self.box
        if not box[0] <= dlat <= box[1]:
            return False
        return box[2] <= _wrap(lon - self.lon0) <= box[3]

    def outside_m(self, lat: float, lon: float) -> float:
        """How far outside the boundary the location is (<= 0: inside or on it)."""
        circle = self.circle
        if circle is not None:
            return haversine_m(circle.lat, circle.lon, lat, lon) - circle.radius_m
        x, y = _wrap(lon - self.lon0) * self.kx, (lat - self.lat0) * _M_PER_DEG
        if _contains(self.xy, x, y):
            return 0.0
        return _distance_to_ring(self.xy, x, y)

    def contains(self, lat: float, lon: float) -> bool:
        circle = self.circle
        if circle is not None:
            return haversine_m(circle.lat, circle.lon, lat, lon) <= circle.radius_m
        return _contains(self.xy, _wrap(lon - self.lon0) * self.kx,
                         (lat - self.lat0) * _M_PER_DEG)


def _contains(ring: Sequence[tuple[float, float]], x: float, y: float) -> bool:
    """Point in polygon (even-odd ray casting), a point on the boundary counting as inside."""
    inside = False
    x1, y1 = ring[-1]
    for x2, y2 in ring:
        if (y1 > y) != (y2 > y):
            cross_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if cross_x == x:
                return True
            if cross_x > x:
                inside = not inside
        elif y1 == y2 == y and min(x1, x2) <= x <= max(x1, x2):
            return True
        x1, y1 = x2, y2
    return inside


def _distance_to_ring(ring: Sequence[tuple[float, float]], x: float, y: float) -> float:
    best = math.inf
    x1, y1 = ring[-1]
    for x2, y2 in ring:
        dx, dy = x2 - x1, y2 - y1
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / length2))
        px, py = x1 + t * dx - x, y1 + t * dy - y
        best = min(best, px * px + py * py)
        x1, y1 = x2, y2
    return math.sqrt(best)


def _inside_after(fence: _Fence, was_inside: bool, lat: float, lon: float) -> bool:
    """The hysteresis: a vehicle inside stays in until it is more than the margin outside;
    one outside enters as soon as the point is inside (the boundary counts as inside)."""
    if was_inside:
        return fence.outside_m(lat, lon) <= fence.hysteresis_m
    return fence.contains(lat, lon)


def destination(lat: float, lon: float, bearing_deg: float, distance_m: float
                ) -> tuple[float, float]:
    """The point `distance_m` from (lat, lon) along the initial bearing (great circle), for
    routes with known crossings (tests, benchmark, simulator)."""
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    d = distance_m / EARTH_RADIUS_M
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1),
                         math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180


class FenceIndex:
    """An application's fences, prepared once, with a grid over their boxes."""

    def __init__(self, fences: Sequence[Geofence]) -> None:
        self.fences = tuple(_Fence(f) for f in fences)
        self.order = {fence.id: index for index, fence in enumerate(self.fences)}
        extents = [max(f.box[1] - f.box[0], f.box[3] - f.box[2]) for f in self.fences]
        wanted = min(1.0, max(0.001, statistics.median(extents))) if extents else 1.0
        self._columns = max(1, round(360.0 / wanted))
        self.cell_deg = 360.0 / self._columns      # whole cells around the globe
        self.grid: dict[tuple[int, int], tuple[int, ...]] = {}
        everywhere: list[int] = []
        cells: dict[tuple[int, int], list[int]] = {}
        for index, fence in enumerate(self.fences):
            rows = range(math.floor((fence.lat0 + fence.box[0]) / self.cell_deg),
                         math.floor((fence.lat0 + fence.box[1]) / self.cell_deg) + 1)
            first = math.floor((fence.lon0 + fence.box[2]) / self.cell_deg)
            last = math.floor((fence.lon0 + fence.box[3]) / self.cell_deg)
            if len(rows) * (last - first + 1) > _MAX_CELLS_PER_FENCE:
                everywhere.append(index)
                continue
            for row in rows:
                for column in range(first, last + 1):
                    cells.setdefault((row, column % self._columns), []).append(index)
        self.everywhere = tuple(everywhere)
        self.grid = {cell: tuple(sorted(set(indices) | set(everywhere)))
                     for cell, indices in cells.items()}

    def _candidates(self, lat: float, lon: float) -> tuple[int, ...]:
        cell = (math.floor(lat / self.cell_deg),
                math.floor(lon / self.cell_deg) % self._columns)
        return self.grid.get(cell, self.everywhere)

    def step(self, inside: Iterable[str], location: Location
             ) -> tuple[frozenset[str], list[Crossing]]:
        """The fences the vehicle is inside after `location`, and the crossings to get there:
        exits first, then enters, each in the order the fences are configured. Ids in
        `inside` that are no longer configured are dropped without an event."""
        _, lat, lon = location
        was = {self.order[fence_id] for fence_id in inside if fence_id in self.order}
        now = set()
        for index in self._candidates(lat, lon):
            fence = self.fences[index]
            if not fence.in_box(lat, lon):
                continue            # outside by more than the hysteresis: out (or an exit)
            if _inside_after(fence, index in was, lat, lon):
                now.add(index)
        return self._result(was, now, location)

    def step_plain(self, inside: Iterable[str], location: Location
                   ) -> tuple[frozenset[str], list[Crossing]]:
        """`step` without the grid and the boxes: every fence tested exactly (the plain
        loop the benchmark compares with; same result)."""
        _, lat, lon = location
        was = {self.order[fence_id] for fence_id in inside if fence_id in self.order}
        now = {index for index, fence in enumerate(self.fences)
               if _inside_after(fence, index in was, lat, lon)}
        return self._result(was, now, location)

    def _result(self, was: set[int], now: set[int], location: Location
                ) -> tuple[frozenset[str], list[Crossing]]:
        if was == now:
            return frozenset(self.fences[i].id for i in now), []
        at, lat, lon = location
        crossings = [Crossing(self.fences[i].id, EXIT, at, lat, lon) for i in sorted(was - now)]
        crossings += [Crossing(self.fences[i].id, ENTER, at, lat, lon) for i in sorted(now - was)]
        return frozenset(self.fences[i].id for i in now), crossings

    def along(self, inside: Iterable[str], locations: Iterable[Location]
              ) -> tuple[frozenset[str], list[Crossing]]:
        """`step` over locations in order: the final set and every crossing."""
        current = frozenset(inside)
        crossings: list[Crossing] = []
        for location in locations:
            current, more = self.step(current, location)
            crossings.extend(more)
        return current, crossings


def locations_of(data: Mapping[str, Any]) -> list[Location]:
    """The reported locations in a document's `data` (its `vehicle_location.coordinates`
    entries with data, not failures), in time order."""
    entries = (data.get("vehicle_location") or {}).get("coordinates") or ()
    found = []
    for entry in entries:
        value = entry.get("data")
        if not isinstance(value, dict):
            continue
        lat, lon = value.get("latitude"), value.get("longitude")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in (lat, lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            continue
        try:
            at = to_epoch_ms(entry.get("timestamp"))
        except (TypeError, ValueError):
            continue
        found.append(Location(at, float(lat), float(lon)))
    found.sort()
    return found
