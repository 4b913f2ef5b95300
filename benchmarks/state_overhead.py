"""What writing the latest state to Redis costs the streaming job: messages/s with and without.

    fleetstream dev up
    python benchmarks/state_overhead.py [--rounds 2] [--backlog 30000] [--write docs/benchmarks.md]

Each round runs the same backlog through the streaming job twice, with a `state:` section
(every mapped message's properties written to the dev Redis, database 15, emptied first)
and without, alternating; the rate is measured as in metrics_overhead.py.
"""
from __future__ import annotations

import redis
from metrics_overhead import ab_arguments, ab_table, run_ab, throughput
from report import publish

REDIS = "redis://127.0.0.1:6379/15"


def main() -> None:
    args = ab_arguments(__doc__)

    def with_state(on: bool) -> float:
        redis.Redis.from_url(REDIS).flushdb()
        return throughput(args.vehicles, args.backlog, REDIS if on else None)

    rates = run_ab(args.rounds, "state writes", with_state)
    publish([
        "## Latest state: what writing it to Redis costs the streaming job",
        "",
        f"`python benchmarks/state_overhead.py --rounds {args.rounds} --backlog "
        f"{args.backlog}`: {args.backlog:,} messages of {args.vehicles} vehicles through the "
        "streaming job (parallelism 2) per run, with a `state:` section (the dev Redis, "
        "database 15) and without, alternately.",
        "",
        *ab_table("state writes", rates, "at most 10 %"),
    ], args.write)


if __name__ == "__main__":
    main()
