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
import dataclasses
import statistics
import sys
import uuid

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


def throughput(vehicles: int, backlog_size: int, state_redis: str | None = None) -> float:
    """Sustained messages/s of one job through a backlog; with `state_redis`, the job also
    writes the latest state there (`state:`)."""
    run = uuid.uuid4().hex[:8]
    settings = settings_for(run, vehicles, 0.2, f"/tmp/fleetstream-overhead-{run}")
    if state_redis:
        settings = dataclasses.replace(settings, config=dataclasses.replace(
            settings.config, state=StateStore(state_redis)))
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
        produce(settings, sent(backlog, sent_at), None)
        delivered(consumer, seen, set(sent_at), 900)
    finally:
        flink_jobs.cancel(job)
        consumer.close()
    times = sorted(seen[i] for i in sent_at)
    return len(times) / max(times[-1] - times[0], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=30_000)
    parser.add_argument("--write", help="append the results to this Markdown file")
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for round_ in range(args.rounds):
            for reporter in (True, False):
                restart_flink(reporter)
                rates[reporter].append(throughput(args.vehicles, args.backlog))
                print(f"round {round_ + 1}, reporter {'on' if reporter else 'off'}: "
                      f"{rates[reporter][-1]:,.0f} messages/s", file=sys.stderr)
    finally:
        restart_flink(True)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    publish([
        "## Metrics: what Prometheus's reporter costs the streaming job",
        "",
        f"`python benchmarks/metrics_overhead.py --rounds {args.rounds} --backlog "
        f"{args.backlog}`: {args.backlog:,} messages of {args.vehicles} vehicles through the "
        "streaming job (parallelism 2) per run, the Flink cluster restarted with the reporter "
        "on, then off, alternately; with it on, Prometheus scrapes every 10 s.",
        "",
        "| reporter | runs (messages/s) | median |",
        "|---|---|---:|",
        f"| on | {', '.join(f'{r:,.0f}' for r in rates[True])} | {on:,.0f} |",
        f"| off | {', '.join(f'{r:,.0f}' for r in rates[False])} | {off:,.0f} |",
        "",
        f"With the reporter the job runs at **{on / off:.2f}** of its rate without it "
        f"({(1 - on / off) * 100:+.1f} % cost; goal under 5 %).",
    ], args.write)


if __name__ == "__main__":
    main()
