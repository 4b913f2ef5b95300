"""What writing the latest state to Redis costs the streaming job: messages/s with and without.

    fleetstream dev up
    python benchmarks/state_overhead.py [--rounds 2] [--backlog 30000] [--write docs/benchmarks.md]

Each round runs the same backlog through the streaming job twice, with a `state:` section
(every mapped message's properties written to the dev Redis, database 15, emptied first)
and without, alternating; the rate is measured as in metrics_overhead.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import redis
from metrics_overhead import throughput
from report import publish

REDIS = "redis://127.0.0.1:6379/15"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=30_000)
    parser.add_argument("--write", help="append the results to this Markdown file")
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for with_state in (True, False):
            redis.Redis.from_url(REDIS).flushdb()
            rates[with_state].append(throughput(args.vehicles, args.backlog,
                                                REDIS if with_state else None))
            print(f"round {round_ + 1}, state {'on' if with_state else 'off'}: "
                  f"{rates[with_state][-1]:,.0f} messages/s", file=sys.stderr)
    vehicles_kept = redis.Redis.from_url(REDIS).dbsize()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    publish([
        "## Latest state: what writing it to Redis costs the streaming job",
        "",
        f"`python benchmarks/state_overhead.py --rounds {args.rounds} --backlog "
        f"{args.backlog}`: {args.backlog:,} messages of {args.vehicles} vehicles through the "
        "streaming job (parallelism 2) per run, with a `state:` section (the dev Redis) and "
        f"without, alternately; the last state run left {vehicles_kept:,} keys.",
        "",
        "| state writes | runs (messages/s) | median |",
        "|---|---|---:|",
        f"| on | {', '.join(f'{r:,.0f}' for r in rates[True])} | {on:,.0f} |",
        f"| off | {', '.join(f'{r:,.0f}' for r in rates[False])} | {off:,.0f} |",
        "",
        f"With state writes the job runs at **{on / off:.2f}** of its rate without them "
        f"({(1 - on / off) * 100:+.1f} % cost; goal at most 10 %).",
    ], args.write)


if __name__ == "__main__":
    main()
