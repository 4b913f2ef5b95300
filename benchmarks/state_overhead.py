"""What writing the latest state to Redis costs the streaming job: messages/s with and without.

    fleetstream dev up
    python benchmarks/state_overhead.py [--rounds 2] [--backlog 30000] [--write docs/benchmarks.md]

Each round runs the same backlog through the streaming job twice, with a `state:` section
(every mapped message's properties written to Redis) and without, alternating; the rate
is measured as in metrics_overhead.py. The Redis is the benchmark's own (the dev
configuration: append-only file fsynced every second, RDB snapshots at Redis's default
points, on a free port), emptied before each run: the shared dev Redis may hold other
work's data (the API benchmark leaves 100,000 vehicles, ~315 MB), and the snapshots that
the job's writes trigger would then fork and write all of it during the "on" runs.
"""
from __future__ import annotations

import redis
from metrics_overhead import ab_arguments, ab_table, run_ab, throughput
from report import publish

from fleetstream.dev.redis import RedisService
from fleetstream.dev.service import free_port


def main() -> None:
    args = ab_arguments(__doc__)
    server = RedisService(free_port(), name="redis-state-overhead")
    server.start()
    client = redis.Redis(port=server.port)
    forks: list[int] = []

    def with_state(on: bool) -> float:
        client.flushall()
        before = client.info("stats")["total_forks"]
        rate = throughput(args.vehicles, args.backlog, server.url if on else None)
        if on:
            forks.append(client.info("stats")["total_forks"] - before)
        return rate

    try:
        rates = run_ab(args.rounds, "state writes", with_state)
    finally:
        server.stop()
    publish([
        "## Latest state: what writing it to Redis costs the streaming job",
        "",
        f"`python benchmarks/state_overhead.py --rounds {args.rounds} --backlog "
        f"{args.backlog}`: {args.backlog:,} messages of {args.vehicles} vehicles through the "
        "streaming job (parallelism 2) per run, with a `state:` section (a Redis of the "
        "benchmark's own, the dev configuration, emptied before each run) and without, "
        f"alternately. Redis forked (snapshots, log rewrites) {', '.join(map(str, forks))} "
        "time(s) during the runs with state writes.",
        "",
        *ab_table("state writes", rates, "at most 10 %"),
    ], args.write)


if __name__ == "__main__":
    main()
