"""The geofence rule per location update: `FenceIndex.step` against a plain loop over the fences.

    PYTHONPATH=. python benchmarks/geofence_bench.py [--updates 20000] [--repeat 3]

For 10, 100 and 1,000 fences per application (half circles, half 4-point polygons,
scattered over a 30 km x 30 km city, 50 m to 1.5 km across, hysteresis 25 m) and a
vehicle driving a random route through them (one location every 20 m), it measures
the time per location update of

- `grid`: `FenceIndex.step` (the grid over the fences' widened boxes; what the job runs);
- `plain`: `FenceIndex.step_plain`, every fence tested exactly (haversine for circles,
  ray casting for polygons) in a plain Python loop;

checks that both give the same crossings, and prints a Markdown table (best of
`--repeat` runs, one core).

With `--shapely` (shapely 2 importable; it is not a FleetStream dependency) it also
times the least work shapely would do for the same updates, all fences projected onto
one plane around the city: `STRtree.query(point, predicate="dwithin", distance=25)`
then `contains_xy` on the candidates, and `contains_xy` over every fence at once
(vectorised); neither includes the hysteresis' distance to the boundary.
"""
from __future__ import annotations

import argparse
import math
import random
import time

from fleetstream.schemas.geofences import Circle, Geofence, Polygon
from fleetstream.transforms.geofences import EARTH_RADIUS_M, FenceIndex, Location, destination

CENTRE = (48.137, 11.575)


def fences(count: int, rng: random.Random) -> list[Geofence]:
    made = []
    for i in range(count):
        centre = destination(*CENTRE, rng.uniform(0, 360), 15_000 * math.sqrt(rng.random()))
        size = rng.uniform(25, 750)
        if i % 2:
            made.append(Geofence(f"c{i}", Circle(*centre, size), 25.0))
        else:
            made.append(Geofence(f"p{i}", Polygon(tuple(
                destination(*centre, bearing, size) for bearing in (0, 90, 180, 270))), 25.0))
    return made


def route(updates: int, rng: random.Random) -> list[Location]:
    position, bearing, points = CENTRE, rng.uniform(0, 360), []
    for i in range(updates):
        bearing += rng.gauss(0, 15)
        if math.dist(position, CENTRE) > 0.12:      # turn back towards the city
            bearing += 180
        position = destination(*position, bearing, 20)
        points.append(Location(i * 1000, *position))
    return points


def per_update_us(step, locations: list[Location], repeat: int) -> tuple[float, int]:
    best, crossings = math.inf, 0
    for _ in range(repeat):
        inside, crossings = frozenset(), 0
        started = time.perf_counter()
        for location in locations:
            inside, events = step(inside, location)
            crossings += len(events)
        best = min(best, time.perf_counter() - started)
    return best / len(locations) * 1e6, crossings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shapely", action="store_true")
    args = parser.parse_args()
    rng = random.Random(11)
    locations = route(args.updates, rng)
    print("| fences | grid µs/update | plain loop µs/update | speed-up | crossings |")
    print("|---:|---:|---:|---:|---:|")
    for count in (10, 100, 1_000):
        index = FenceIndex(fences(count, rng))
        plain_us, plain_crossings = per_update_us(index.step_plain, locations, args.repeat)
        grid_us, grid_crossings = per_update_us(index.step, locations, args.repeat)
        assert grid_crossings == plain_crossings
        print(f"| {count:,} | {grid_us:.2f} | {plain_us:.2f} | {plain_us / grid_us:.1f}x "
              f"| {grid_crossings:,} |")
    if args.shapely:
        shapely_table(locations, rng, args.repeat)


def shapely_table(locations: list[Location], rng: random.Random, repeat: int) -> None:
    import numpy as np
    import shapely

    kx = EARTH_RADIUS_M * math.pi / 180 * math.cos(math.radians(CENTRE[0]))
    ky = EARTH_RADIUS_M * math.pi / 180

    def plane(lat: float, lon: float) -> tuple[float, float]:
        return (lon - CENTRE[1]) * kx, (lat - CENTRE[0]) * ky

    points = [plane(location.latitude, location.longitude) for location in locations]
    print()
    print("| fences | shapely STRtree + contains_xy µs/update | shapely contains_xy, all "
          "fences µs/update |")
    print("|---:|---:|---:|")
    for count in (10, 100, 1_000):
        geometries = np.array([
            shapely.Point(*plane(f.shape.lat, f.shape.lon)).buffer(f.shape.radius_m, 32)
            if isinstance(f.shape, Circle)
            else shapely.Polygon([plane(*point) for point in f.shape.points])
            for f in fences(count, rng)])
        shapely.prepare(geometries)
        tree = shapely.STRtree(geometries)

        def with_tree() -> None:
            for x, y in points:
                candidates = tree.query(shapely.Point(x, y), predicate="dwithin", distance=25.0)
                if len(candidates):
                    shapely.contains_xy(geometries[candidates], x, y)

        def every_fence() -> None:
            for x, y in points:
                shapely.contains_xy(geometries, x, y)

        timings = []
        for run in (with_tree, every_fence):
            best = math.inf
            for _ in range(repeat):
                started = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - started)
            timings.append(best / len(points) * 1e6)
        print(f"| {count:,} | {timings[0]:.2f} | {timings[1]:.2f} |")


if __name__ == "__main__":
    main()
