"""What Prometheus's reporter costs the streaming job: messages/s with and without it.

    fleetstream dev up
    python benchmarks/metrics_overhead.py [--rounds 2] [--backlog 30000] [--write docs/benchmarks.md]

Each round restarts the Flink JobManager and TaskManager with the reporter on, then
off (alternating, so drift on the noisy machine hits both), submits the streaming job,
and times a backlog through it as stream_bench.py does (sustained messages/s from the
first to the last delivered document). With the reporter on, the dev Prometheus
scrapes it every 10 s as in normal use. Beam's counters are counted either way: the
reporter is what differs.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import uuid
from typing import Callable, ContextManager

from confluent_kafka import Consumer
from report import publish
from stream_bench import BOOTSTRAP, delivered, produce, sent, settings_for, simulated, warm_up

from fleetstream.dev.flink import FlinkJobManager, FlinkTaskManager
from fleetstream.pipelines.stream import ensure_topics, submit_stream
from fleetstream.runtime import flink_jobs
from fleetstream.schemas.config import StateStore


def restart_flink(reporter: bool) -> None:
    """The JobManager and TaskManager again, with or without the Prometheus reporter."""
    manager, worker = FlinkJobManager(metrics_reporter=reporter), FlinkTaskManager()
    worker.stop()
    manager.stop()
    manager.start()
    worker.start()


def throughput(vehicles: int, backlog_size: int, state_redis: str | None = None,
               worker_pool: str | None = None,
               around_backlog: ContextManager | None = None) -> float:
    """Sustained messages/s of one job through a backlog; with `state_redis`, the job also
    writes the latest state there (`state:`); `worker_pool` (host:port) runs its Python
    steps on another worker pool than the cluster's; `around_backlog` is entered from
    producing the backlog until its last document is delivered (to measure that span)."""
    run = uuid.uuid4().hex[:8]
    settings = settings_for(run, vehicles, 0.2, f"/tmp/fleetstream-overhead-{run}")
    if state_redis:
        settings = dataclasses.replace(settings, config=dataclasses.replace(
            settings.config, state=StateStore(state_redis)))
    if worker_pool:
        settings = dataclasses.replace(settings, flink=dataclasses.replace(
            settings.flink, environment_config=worker_pool))
    ensure_topics(settings)
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"overhead-{run}",
                         "auto.offset.reset": "earliest", "fetch.min.bytes": 1 << 20,
                         "fetch.wait.max.ms": 500})
    backlog = simulated(vehicles, backlog_size)
    known = tuple(flink_jobs.running_jobs())
    submit_stream(settings)
    job = flink_jobs.wait_running(known=known)
    consumer.subscribe([settings.delivered_topic])
    seen: dict[str, float] = {}
    sent_at: dict[str, float] = {}
    try:
        warm_up(settings, vehicles, consumer, seen)
        with around_backlog or contextlib.nullcontext():
            produce(settings, sent(backlog, sent_at), None)
            delivered(consumer, seen, set(sent_at), 900)
    finally:
        flink_jobs.cancel(job)
        consumer.close()
    times = sorted(seen[i] for i in sent_at)
    return len(times) / max(times[-1] - times[0], 1e-9)


def ab_arguments(doc: str) -> argparse.Namespace:
    """The options both on/off comparisons take."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=30_000)
    parser.add_argument("--worker-pool", help="host:port of the SDK worker pool the job's "
                        "Python steps run on (default: the cluster's, localhost:50000)")
    parser.add_argument("--write", help="append the results to this Markdown file")
    return parser.parse_args()


def run_ab(rounds: int, what: str, run: Callable[[bool], float]) -> dict[bool, list[float]]:
    """`run(on)` alternately with `what` on and off, `rounds` times each: the rates."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(rounds):
        for on in (True, False):
            rates[on].append(run(on))
            print(f"round {round_ + 1}, {what} {'on' if on else 'off'}: "
                  f"{rates[on][-1]:,.0f} messages/s", file=sys.stderr)
    return rates


def ab_table(what: str, rates: dict[bool, list[float]], goal: str) -> list[str]:
    """The Markdown rows of an on/off comparison and its ratio."""
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    return [
        f"| {what} | runs (messages/s) | median |",
        "|---|---|---:|",
        f"| on | {', '.join(f'{r:,.0f}' for r in rates[True])} | {on:,.0f} |",
        f"| off | {', '.join(f'{r:,.0f}' for r in rates[False])} | {off:,.0f} |",
        "",
        f"With {what} the job runs at **{on / off:.2f}** of its rate without "
        f"({(1 - on / off) * 100:+.1f} % cost; goal {goal}).",
    ]


def main() -> None:
    args = ab_arguments(__doc__)

    def with_reporter(on: bool) -> float:
        restart_flink(on)
        return throughput(args.vehicles, args.backlog)

    try:
        rates = run_ab(args.rounds, "the reporter", with_reporter)
    finally:
        restart_flink(True)
    publish([
        "## Metrics: what Prometheus's reporter costs the streaming job",
        "",
        f"`python benchmarks/metrics_overhead.py --rounds {args.rounds} --backlog "
        f"{args.backlog}`: {args.backlog:,} messages of {args.vehicles} vehicles through the "
        "streaming job (parallelism 2) per run, the Flink cluster restarted with the reporter "
        "on, then off, alternately; with it on, Prometheus scrapes every 10 s.",
        "",
        *ab_table("the reporter", rates, "under 5 %"),
    ], args.write)


if __name__ == "__main__":
    main()
