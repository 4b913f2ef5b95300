"""CPU per message of the streaming job's latest-state step (`WriteLatestState`'s DoFn) against
Redis, in-process, and the CPU Redis spends on it.

    PYTHONPATH=. python benchmarks/state_write_cpu.py [--vehicles 500] [--messages 30000]
        [--bundle 1000] [--element 100] [--rounds 3]

Simulated messages (as state_overhead.py's streaming job gets them: `--vehicles` vehicles,
no errors) are mapped once, then fed to the DoFn as the streaming job does: lists of
`--element` (vin, MappedMessage) pairs, `--bundle` messages per bundle (start_bundle ...
finish_bundle, which writes what is pending), into Redis database `--db` (emptied each
round). Per message: this process's CPU (`time.process_time`), Redis's CPU (INFO cpu,
used_cpu_user + used_cpu_sys; Redis is shared, so other clients' work can show), and the
floor: `state_updates` alone (what any writer must compute). Only the DoFn's constructor is
used, so the same script measures another checkout (`PYTHONPATH=/other/checkout`) for a
before/after ratio in one session.
"""
from __future__ import annotations

import argparse
import os
import time

import redis

from fleetstream.io.redis.write_state import _WriteStateFn
from fleetstream.mappers import MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.schemas.state import state_updates
from fleetstream.simulator import simulate_keyed


def mapped_messages(vehicles: int, messages: int) -> list[tuple[str, MappedMessage]]:
    """(vin, MappedMessage) of simulated messages that map to data."""
    found = []
    for _, envelope in simulate_keyed(vehicles, messages=messages, seed=3, error_rate=0,
                                      duplicate_rate=0, start_ms=int(time.time() * 1000)):
        result = MAPPERS[envelope["source"]](envelope["payload"].encode(), 0)
        if result.outcome not in (FAILED, IGNORED) and result.data:
            found.append((result.vin, MappedMessage(envelope["source"], "", 0, 0, result.data)))
    return found


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def run(url: str, messages: list[tuple[str, MappedMessage]], bundle: int,
        element: int) -> tuple[float, float, float]:
    """(CPU s per message here, in Redis, wall s per message) of one pass through the DoFn."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    fn = _WriteStateFn(url, True, 600.0, 500)
    fn.setup()
    redis_before, cpu, wall = redis_cpu(client), time.process_time(), time.perf_counter()
    for start in range(0, len(messages), bundle):
        fn.start_bundle()
        chunk = messages[start:start + bundle]
        for at in range(0, len(chunk), element):
            fn.process(chunk[at:at + element])
        fn.finish_bundle()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    in_redis = redis_cpu(client) - redis_before
    fn.teardown()
    return cpu / len(messages), in_redis / len(messages), wall / len(messages)


def floor(messages: list[tuple[str, MappedMessage]]) -> float:
    """CPU s per message of `state_updates` alone."""
    cpu = time.process_time()
    for _, message in messages:
        state_updates(message.data)
    return (time.process_time() - cpu) / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--bundle", type=int, default=1000)
    parser.add_argument("--element", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", type=int, default=14, help="Redis database (emptied)")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    args = parser.parse_args()
    url = f"redis://{args.redis}/{args.db}"
    messages = mapped_messages(args.vehicles, args.messages)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for _ in range(args.rounds):
        here, in_redis, wall = run(url, messages, args.bundle, args.element)
        print(f"{len(messages):,} messages, {args.vehicles} vehicles, bundles of {args.bundle}: "
              f"{here * 1e6:,.1f} us CPU per message in the DoFn, {in_redis * 1e6:,.1f} us in "
              f"Redis, {wall * 1e6:,.1f} us wall; floor (state_updates alone) "
              f"{floor(messages) * 1e6:,.1f} us")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
