"""Geofences: configuration checks, the crossing rule with hysteresis, and the event shape."""
from __future__ import annotations

import math
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.geofences import (DEFAULT_HYSTERESIS_M, Circle, Geofence, Polygon,
                                           geofence_event, geofence_message_id, parse_geofences)
from fleetstream.settings.config import parse_config
from fleetstream.transforms.geofences import (FenceIndex, Location, destination, haversine_m,
                                              locations_of)

MUNICH = (48.137, 11.575)


def route(points: list[tuple[float, float]], start_ms: int = 1_000) -> list[Location]:
    return [Location(start_ms + 1000 * i, lat, lon) for i, (lat, lon) in enumerate(points)]


def circle(fence_id: str = "depot", radius_m: float = 300, hysteresis_m: float = 25,
           centre: tuple[float, float] = MUNICH) -> Geofence:
    return Geofence(fence_id, Circle(*centre, radius_m), hysteresis_m)


# --- configuration ---------------------------------------------------------------------

def config(geofences, permissions=("vehicle_location.coordinates",), **extra):
    return parse_config({"applications": [
        {"id": "fleet", "permissions": list(permissions),
         "sink": {"type": "file", "path": "unused"}, "geofences": geofences, **extra}]})


def test_geofences_are_parsed_with_their_hysteresis() -> None:
    app = config([{"id": "depot", "circle": {"lat": 48.1, "lon": 11.5, "radius_m": 300}},
                  {"id": "yard", "polygon": [[48, 11], [48, 11.1], [48.1, 11.1], [48, 11]],
                   "hysteresis_m": 5}], geofence_hysteresis_m=40).applications[0]
    assert app.geofences == (
        Geofence("depot", Circle(48.1, 11.5, 300.0), 40.0),
        Geofence("yard", Polygon(((48.0, 11.0), (48.0, 11.1), (48.1, 11.1))), 5.0))
    assert config(None).applications[0].geofences == ()
    assert parse_geofences([{"id": "a", "circle": {"lat": 0, "lon": 0, "radius_m": 1}}],
                           "g")[0].hysteresis_m == DEFAULT_HYSTERESIS_M


_AT_0 = {"lat": 0, "lon": 0}


@pytest.mark.parametrize("fences, words", [
    ([{"id": "a", "circle": {"lat": 91, "lon": 0, "radius_m": 10}}],
     ["[0] (a).circle", "lat", "[-90, 90]"]),
    ([{"id": "a", "circle": {"lat": 0, "lon": -181, "radius_m": 10}}], ["lon", "[-180, 180]"]),
    ([{"id": "a", "circle": {"lat": 0, "lon": 0, "radius_m": 0}}], ["radius_m", "> 0"]),
    ([{"id": "a", "circle": {"lat": 0, "lon": 0, "radius_m": -5}}], ["radius_m", "> 0"]),
    ([{"id": "a", "circle": {"lat": 0, "lon": 0}}], ["missing radius_m"]),
    ([{"id": "a", "circle": {**_AT_0, "radius_m": 5, "radius": 3}}], ["unknown", "radius"]),
    ([{"id": "a", "polygon": [[0, 0], [0, 1]]}], ["at least 3 distinct points"]),
    ([{"id": "a", "polygon": [[0, 0], [0, 1], [0, 0], [0, 1]]}], ["at least 3"]),
    ([{"id": "bow", "polygon": [[0, 0], [1, 1], [1, 0], [0, 1]]}],
     ["[0] (bow).polygon", "intersects itself"]),
    ([{"id": "a", "polygon": [[0, 0], [0, 200], [1, 1]]}], ["polygon[1]", "lon"]),
    ([{"id": "a", "polygon": [[0, -100], [0, 0], [0, 100], [10, 0]]}], ["180 degrees"]),
    ([{"id": "a", "polygon": [[0, 0], [0, 1], [1]]}], ["polygon[2]", "[lat, lon]"]),
    ([{"id": "a", "circle": {**_AT_0, "radius_m": 5}},
      {"id": "a", "circle": {"lat": 1, "lon": 0, "radius_m": 5}}],
     ["[1]", "duplicate geofence id 'a'"]),
    ([{"id": "a", "circle": {**_AT_0, "radius_m": 5}, "colour": "red"}], ["unknown", "colour"]),
    ([{"id": "a"}], ["exactly one of circle"]),
    ([{"id": "a", "circle": {**_AT_0, "radius_m": 5}, "polygon": [[0, 0], [0, 1], [1, 1]]}],
     ["exactly one of circle"]),
    ([{"id": "a:b", "circle": {"lat": 0, "lon": 0, "radius_m": 5}}], ["id", "':'"]),
    ([{"id": "a", "circle": {"lat": 0, "lon": 0, "radius_m": 5}, "hysteresis_m": -1}],
     ["hysteresis_m", ">= 0"]),
    ({"id": "a"}, ["expected a list"]),
])
def test_bad_geofences_are_refused_naming_the_entry_and_the_fix(fences, words) -> None:
    with pytest.raises(ConfigError) as refused:
        config(fences)
    message = str(refused.value)
    assert message.startswith("applications[fleet].geofences")
    for word in words:
        assert word in message, (word, message)


def test_geofences_need_the_location_permission_and_a_json_sink() -> None:
    fence = [{"id": "a", "circle": {"lat": 0, "lon": 0, "radius_m": 5}}]
    with pytest.raises(ConfigError, match="vehicle_location.coordinates"):
        config(fence, permissions=["diagnostics.odometer"])
    with pytest.raises(ConfigError, match="format: jsonl"):
        parse_config({"applications": [{
            "id": "fleet", "permissions": ["vehicle_location.*"], "geofences": fence,
            "sink": {"type": "s3", "bucket": "fleet-bucket", "format": "avro"}}]})


def test_a_closed_ring_and_a_concave_polygon_are_accepted() -> None:
    fences = parse_geofences([{"id": "u", "polygon": [[0, 0], [0, 3], [3, 3], [3, 2], [1, 2],
                                                      [1, 1], [3, 1], [3, 0], [0, 0]]}], "g")
    assert len(fences[0].shape.points) == 8


# --- the rule --------------------------------------------------------------------------

def test_a_straight_drive_through_a_circle_enters_once_then_exits_once() -> None:
    index = FenceIndex([circle(radius_m=300, hysteresis_m=25)])
    start = destination(*MUNICH, 270, 2_000)
    points = [destination(*start, 90, 20 * i) for i in range(201)]      # 4 km east, 20 m steps
    inside, crossings = index.along(frozenset(), route(points))
    assert inside == frozenset()
    assert [(c.geofence_id, c.event) for c in crossings] == [("depot", "enter"), ("depot", "exit")]
    enter, leave = crossings
    assert haversine_m(*MUNICH, enter.latitude, enter.longitude) <= 300
    assert 300 + 25 < haversine_m(*MUNICH, leave.latitude, leave.longitude) <= 300 + 25 + 20
    assert enter.timestamp_ms < leave.timestamp_ms


def test_jitter_on_a_boundary_gives_at_most_one_crossing() -> None:
    rng = random.Random(7)
    for fence in (circle(radius_m=300),
                  Geofence("square", Polygon(((48.0, 11.0), (48.0, 11.1), (48.1, 11.1),
                                              (48.1, 11.0))), 25)):
        index = FenceIndex([fence])
        # on the boundary: the circle's east point, the square's south edge
        edge = destination(*MUNICH, 90, 300) if isinstance(fence.shape, Circle) else (48.0, 11.05)
        points = [destination(*edge, rng.uniform(0, 360), rng.uniform(0, 10)) for _ in range(200)]
        _, crossings = index.along(frozenset(), route(points))
        assert len(crossings) <= 1, fence.id
        assert [c.event for c in crossings] in ([], ["enter"])


def test_polygons_concave_and_across_the_antimeridian() -> None:
    u_shape = Geofence("u", Polygon(((0, 0), (0, 0.03), (0.03, 0.03), (0.03, 0.02), (0.01, 0.02),
                                     (0.01, 0.01), (0.03, 0.01), (0.03, 0))), 0)
    index = FenceIndex([u_shape])
    assert index.step(frozenset(), Location(0, 0.02, 0.015))[0] == frozenset()   # the notch
    assert index.step(frozenset(), Location(0, 0.005, 0.015))[0] == {"u"}
    across = Geofence("dateline", Polygon(((-1, 179.5), (-1, -179.5), (1, -179.5), (1, 179.5))), 25)
    index = FenceIndex([across])
    for lon in (179.9, -179.9, 180.0):
        assert index.step(frozenset(), Location(0, 0.0, lon))[0] == {"dateline"}, lon
    assert index.step(frozenset(), Location(0, 0.0, 179.0))[0] == frozenset()
    assert index.step(frozenset(), Location(0, 0.0, -179.0))[0] == frozenset()


def test_exits_need_the_hysteresis_and_unknown_fences_are_dropped() -> None:
    index = FenceIndex([circle(radius_m=100, hysteresis_m=50)])
    just_out = Location(0, *destination(*MUNICH, 0, 140))
    far_out = Location(1, *destination(*MUNICH, 0, 151))
    assert index.step({"depot"}, just_out) == (frozenset({"depot"}), [])
    inside, crossings = index.step({"depot", "removed-from-config"}, far_out)
    assert inside == frozenset() and [c.event for c in crossings] == ["exit"]
    # a jump far away is an exit too (the grid holds no candidate there)
    assert index.step({"depot"}, Location(2, -33.9, 151.2))[1][0].event == "exit"


def test_exits_come_before_enters_in_configured_order() -> None:
    a = circle("a", 100, 0, MUNICH)
    b = circle("b", 100, 0, destination(*MUNICH, 90, 150))
    c = circle("c", 100, 0, destination(*MUNICH, 90, 150))
    index = FenceIndex([c, b, a])
    _, crossings = index.step({"a"}, Location(5, *destination(*MUNICH, 90, 150)))
    assert [(x.geofence_id, x.event) for x in crossings] == [("a", "exit"), ("c", "enter"),
                                                              ("b", "enter")]


def _random_fences(rng: random.Random, count: int) -> list[Geofence]:
    fences = []
    for i in range(count):
        centre = destination(*MUNICH, rng.uniform(0, 360), rng.uniform(0, 5_000))
        if rng.random() < 0.5:
            fences.append(Geofence(f"c{i}", Circle(*centre, rng.uniform(20, 1_500)),
                                   rng.choice([0, 10, 25, 100])))
        else:
            size = rng.uniform(50, 1_500)
            corners = tuple(destination(*centre, bearing, size) for bearing in (0, 90, 180, 270))
            fences.append(Geofence(f"p{i}", Polygon(corners), rng.choice([0, 10, 25, 100])))
    return fences


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), fences=st.integers(1, 30), steps=st.integers(1, 150),
       step_m=st.floats(1, 500))
def test_on_random_routes_enters_and_exits_alternate_starting_outside(
        seed: int, fences: int, steps: int, step_m: float) -> None:
    rng = random.Random(seed)
    index = FenceIndex(_random_fences(rng, fences))
    position = destination(*MUNICH, rng.uniform(0, 360), rng.uniform(0, 6_000))
    bearing, points = rng.uniform(0, 360), []
    for _ in range(steps):
        bearing += rng.gauss(0, 40)
        position = destination(*position, bearing, rng.uniform(0, step_m))
        points.append(position)
    inside, plain_inside, crossings = frozenset(), frozenset(), []
    for location in route(points):
        inside, more = index.step(inside, location)
        plain_inside, plain_more = index.step_plain(plain_inside, location)
        assert (inside, more) == (plain_inside, plain_more)   # the grid changes nothing
        crossings += more
    per_fence: dict[str, list[str]] = {}
    for crossing in crossings:
        per_fence.setdefault(crossing.geofence_id, []).append(crossing.event)
    for fence_id, events in per_fence.items():
        assert events == ["enter", "exit"] * (len(events) // 2) + ["enter"] * (len(events) % 2)
        assert (fence_id in inside) == (events[-1] == "enter")


# --- locations and the event ------------------------------------------------------------

def test_locations_of_a_document_keep_data_entries_in_time_order() -> None:
    data = {"vehicle_location": {"coordinates": [
        {"data": {"latitude": 48.2, "longitude": 11.6}, "timestamp": "2026-03-01T08:00:02.000Z"},
        {"failure": {"reason": "unavailable"}, "timestamp": "2026-03-01T08:00:03.000Z"},
        {"data": {"latitude": 48.1, "longitude": 11.5}, "timestamp": "2026-03-01T08:00:01.000Z"},
        {"data": {"latitude": "x", "longitude": 11.5}, "timestamp": "2026-03-01T08:00:04.000Z"}]},
        "diagnostics": {}}
    assert locations_of(data) == [Location(1772352001000, 48.1, 11.5),
                                  Location(1772352002000, 48.2, 11.6)]
    assert locations_of({"diagnostics": {}}) == []


def test_the_event_has_the_contract_shape_and_a_deterministic_id() -> None:
    event = orjson.loads(geofence_event("fleet", "p-abc", "depot", "enter", 1772352001500,
                                        48.1, 11.5))
    assert event == {"version": 1, "type": "geofence",
                     "message_id": geofence_message_id("fleet", "p-abc", "depot", "enter",
                                                       1772352001500),
                     "application_id": "fleet", "vin": "p-abc", "geofence_id": "depot",
                     "event": "enter", "timestamp": "2026-03-01T08:00:01.500Z",
                     "location": {"latitude": 48.1, "longitude": 11.5}}
    ids = {geofence_message_id(*args) for args in [
        ("fleet", "p-abc", "depot", "enter", 1), ("fleet", "p-abc", "depot", "exit", 1),
        ("other", "p-abc", "depot", "enter", 1), ("fleet", "p-abd", "depot", "enter", 1),
        ("fleet", "p-abc", "yard", "enter", 1), ("fleet", "p-abc", "depot", "enter", 2)]}
    assert len(ids) == 6
