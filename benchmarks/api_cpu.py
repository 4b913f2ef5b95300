"""CPU per `GET /v1/vehicles/{vin}` answer of the API in-process (no HTTP server), against
the CPU of a bare HGETALL of redis-py.

    PYTHONPATH=. python benchmarks/api_cpu.py [--vehicles 5000] [--requests 20000]
        [--concurrency 64] [--rounds 3] [--profile]

Fills `--vehicles` full states (benchmarks/api_bench.py's) into Redis database `--db`
(emptied first), approves them for one application, then calls the ASGI application
directly (`fleetstream.api.app.create_app`, as uvicorn would, minus HTTP parsing) from
`--concurrency` concurrent tasks, each asking for random vehicles: CPU seconds of this
process per answer (`time.process_time`), and answers/s. The ceiling: a bare redis-py
`hgetall` loop's CPU per call in the same process. Only public interfaces are used, so the
same script measures another checkout (`PYTHONPATH=/other/checkout`) for a before/after
ratio in one session. `--profile` prints the top of a cProfile of one round.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import sys
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_bench import START_MS, full_state, vin_of  # noqa: E402
from fleetstream.api.activations import Approvals  # noqa: E402
from fleetstream.api.app import StateApi, create_app  # noqa: E402
from fleetstream.api.keys import ApiKeys  # noqa: E402
from fleetstream.io.redis.state_store import StateWriter  # noqa: E402
from fleetstream.schemas.activations import ActivationEvent  # noqa: E402
from fleetstream.schemas.catalogue import CAPABILITIES  # noqa: E402
from fleetstream.schemas.state import state_key, state_updates  # noqa: E402
from fleetstream.settings.config import parse_config  # noqa: E402

KEY = "bench-key-0123456789abcdef"


def fill(url: str, vehicles: int) -> None:
    redis.Redis.from_url(url).flushdb()
    rng = random.Random(1)
    StateWriter(url).write((vin_of(n), state_updates(full_state(n, rng)))
                           for n in range(vehicles))


def build(url: str, vehicles: int):
    """The ASGI application over `url`, every vehicle approved for application `bench`."""
    config = parse_config({"applications": [{
        "id": "bench", "permissions": [f"{c}.*" for c in CAPABILITIES],
        "sink": {"type": "file", "path": "/tmp/unused"}, "api_keys_env": "BENCH_API_KEYS"}],
        "state": {"redis": url}}, Path("/tmp"), environ={})
    approvals = Approvals(config.applications)
    for n in range(vehicles):
        approvals.offer(ActivationEvent(vin_of(n), "bench", "approved", START_MS))
    client = aioredis.Redis.from_url(url, max_connections=256)
    return create_app(StateApi(config.applications, approvals, ApiKeys({"bench": [KEY]}),
                               client))


def scope_of(path: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "server": ("127.0.0.1", 8091), "client": ("127.0.0.1", 50000),
            "headers": [(b"host", b"127.0.0.1:8091"), (b"user-agent", b"wrk"),
                        (b"authorization", f"Bearer {KEY}".encode())]}


async def drive(app, vehicles: int, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU s per answer, answers/s) of `requests` answers from `concurrency` tasks."""
    rng = random.Random(3)
    paths = [f"/v1/vehicles/{vin_of(rng.randrange(vehicles))}" for _ in range(requests)]
    statuses: list[int] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def worker(mine: list[str]) -> None:
        for path in mine:
            await app(scope_of(path), receive, send)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(paths[i::concurrency]) for i in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert statuses.count(200) == requests, set(statuses)
    return cpu / requests, requests / wall


def hgetall_cpu(url: str, vehicles: int, calls: int) -> float:
    """CPU s per call of a bare redis-py hgetall loop."""
    client, rng = redis.Redis.from_url(url), random.Random(4)
    keys = [state_key(vin_of(rng.randrange(vehicles))) for _ in range(calls)]
    cpu = time.process_time()
    for key in keys:
        client.hgetall(key)
    return (time.process_time() - cpu) / calls


async def rounds(app, url: str, args: argparse.Namespace) -> None:
    await drive(app, args.vehicles, 2000, args.concurrency)      # warm up
    for _ in range(args.rounds):
        ceiling = hgetall_cpu(url, args.vehicles, args.requests // 4)
        cpu, rate = await drive(app, args.vehicles, args.requests, args.concurrency)
        print(f"API in-process: {cpu * 1e6:,.0f} us CPU per answer ({rate:,.0f} answers/s, "
              f"{args.concurrency} concurrent); bare HGETALL: {ceiling * 1e6:,.0f} us CPU per "
              f"call; ratio {cpu / ceiling:.2f}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await drive(app, args.vehicles, args.requests, args.concurrency)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vehicles", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", type=int, default=13, help="Redis database (emptied)")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("--reuse", action="store_true", help="keep a previous run's fill")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    url = f"redis://{args.redis}/{args.db}"
    if not (args.reuse and redis.Redis.from_url(url).dbsize() >= args.vehicles):
        fill(url, args.vehicles)
    import uvloop
    uvloop.install()
    app = build(url, args.vehicles)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    asyncio.run(rounds(app, url, args))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
