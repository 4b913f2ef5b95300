"""Streaming benchmark: the job on the local Flink cluster (parallelism 2) fed from Kafka.

    fleetstream dev up        # Kafka, Flink, job server, expansion service, worker pool
    python benchmarks/stream_bench.py [--backlog 60000] [--seconds 30] [--write docs/benchmarks.md]

1. Throughput: the job starts on fresh raw topics; once a few warm-up messages come out
   on the `delivered` topic (so the job has read the activations: a message the keyed
   join sees before its vehicle's activation is filtered, as the job's semantics say),
   `--backlog` simulated messages (made beforehand, as in the latency phase, so the
   simulator does not compete with the job for CPU) are produced as fast as possible and the benchmark times how
   long it takes until every expected document is on the `delivered` topic (sustained
   messages/s: the clock starts at the first delivered backlog document). The job's
   CPU per message (SDK workers, TaskManager, and the broker apart) is compared with a plain Python loop
   over the same messages (`plain_loop.py`), run after the job, in the same run.
2. Latency: with the job caught up, messages are produced at half that rate for
   `--seconds`; latency is the `delivered` record's timestamp (when the job wrote the
   document) minus the raw record's produce time, per document: p50, p99, max. The
   `delivered` topic is written right after PermitByActivation, so sink batching
   (`max_delay`) is not part of it: that knob's cost is in the sinks benchmark.

The reorder window is part of the latency (a message waits for older ones of its
vehicle), so it is set by `--reorder-window` (default 0.2 s) and printed with the results.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
import uuid
from typing import Iterable, Iterator

from confluent_kafka import Consumer
from plain_loop import run_plain_loop
from report import publish

from fleetstream.io.kafka.producer import produce_envelopes
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.mappers import MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED
from fleetstream.pipelines.stream import ensure_topics, submit_stream
from fleetstream.runtime import flink_jobs
from fleetstream.schemas.document import message_id
from fleetstream.schemas.envelope import RawEnvelope, source_message_id
from fleetstream.settings.config import parse_config
from fleetstream.settings.stream import RAW_READERS, FlinkSettings, OrderSettings, StreamSettings
from fleetstream.simulator import SOURCES, fleet_vins, simulate_keyed
from fleetstream.transforms.order_and_permit_keyed import DEFAULT_VEHICLE_SHARDS

BOOTSTRAP = "127.0.0.1:9092"
APP = "fleet"


def settings_for(run: str, vehicles: int, reorder_window_s: float, out: str,
                 permissions: str = "keyed_state", delivery_shards: int = 1,
                 vehicle_shards: int = DEFAULT_VEHICLE_SHARDS,
                 bundle_ms: int = FlinkSettings.max_bundle_time_ms,
                 checkpoint_ms: int = FlinkSettings.checkpointing_interval_ms,
                 raw_reader: str = KafkaSettings.raw_reader,
                 dedupe_horizon_s: float = OrderSettings.dedupe_horizon_s) -> StreamSettings:
    config = parse_config({
        "applications": [{"id": APP, "permissions": ["diagnostics.*", "charging.*",
                                                     "vehicle_location.*", "doors.*"],
                          "sink": {"type": "file", "path": out, "max_delay": 1}}],
        "activations": [{"vin": vin, "application_id": APP, "status": "approved", "at": 1}
                        for vin in fleet_vins(vehicles, seed=3)]})
    return StreamSettings(
        config, FlinkSettings(parallelism=2, checkpointing_interval_ms=checkpoint_ms,
                                max_bundle_time_ms=bundle_ms),
        KafkaSettings(BOOTSTRAP, f"bench-{run}", "earliest", raw_reader=raw_reader),
        {source: f"{run}.raw.{source}" for source in SOURCES}, f"{run}.activations",
        f"{run}.dead-letters", f"{run}.delivered",
        OrderSettings(reorder_window_s, dedupe_horizon_s),
        permissions, delivery_shards=delivery_shards, vehicle_shards=vehicle_shards)


def simulated(vehicles: int, messages: int) -> list[tuple[str, dict, str | None]]:
    """Simulated (vin, envelope, the id of the document it should make, if any)."""
    made = []
    for vin, envelope in simulate_keyed(vehicles, messages=messages, seed=3, error_rate=0,
                                        duplicate_rate=0, start_ms=int(time.time() * 1000)):
        payload = envelope["payload"].encode()
        result = MAPPERS[envelope["source"]](payload, 0)
        expected = (message_id(source_message_id(envelope["source"], payload), APP)
                    if result.outcome not in (FAILED, IGNORED) and result.data else None)
        made.append((vin, envelope, expected))
    return made


def sent(made: list[tuple[str, dict, str | None]], sent_at: dict[str, float]
         ) -> Iterator[tuple[str, dict]]:
    """(vin, envelope) pairs to produce; notes each expected document's time of sending."""
    for vin, envelope, expected in made:
        if expected is not None:
            sent_at[expected] = time.time()
        yield vin, envelope


def produce(settings: StreamSettings, pairs: Iterable[tuple[str, dict]],
            rate: float | None) -> int:
    """Produce (vin, envelope) pairs to the raw topics, at `rate` messages/s or at once."""
    return produce_envelopes(BOOTSTRAP, pairs, rate, topic_of_source=settings.raw_topics)


def delivered(consumer: Consumer, seen: dict[str, float], until: set[str],
              timeout_s: float) -> None:
    """Consume the delivered topic into `seen` (id -> record time, s) until `until` is covered."""
    import orjson
    deadline = time.monotonic() + timeout_s
    while not until <= seen.keys() and time.monotonic() < deadline:
        for message in consumer.consume(10_000, timeout=1.0):
            if message.error():
                continue
            seen.setdefault(orjson.loads(message.value())["message_id"],
                            message.timestamp()[1] / 1000)
    missing = len(until - seen.keys())
    if missing:
        raise SystemExit(f"{missing} documents did not arrive within {timeout_s:.0f} s")


def cpu_seconds(*markers: str) -> dict[str, float]:
    """CPU seconds (user + system) used so far by processes whose command line holds a marker."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {marker: 0.0 for marker in markers}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        for marker in markers:
            if marker in cmdline:
                used[marker] += (int(fields[11]) + int(fields[12])) / tick
                break
    return used


#: the Python SDK workers, the Flink TaskManager (which runs KafkaIO and the runner side),
#: and the Kafka broker (not the job's, but on the same cores, as the per-core goal counts)
CPU_MARKERS = ("fleetstream.runtime.sdk_worker", "TaskManagerRunner", "kafka.Kafka ")


def warm_up(settings: StreamSettings, vehicles: int, consumer: Consumer,
            seen: dict[str, float], timeout_s: float = 300) -> None:
    """Produce a few messages until documents come out: the job is up and has read activations."""
    import orjson
    deadline = time.monotonic() + timeout_s
    next_batch = 0.0
    while not seen:
        if time.monotonic() > deadline:
            raise SystemExit(f"no document on {settings.delivered_topic} within {timeout_s:.0f} s")
        if time.monotonic() >= next_batch:
            produce(settings, sent(simulated(vehicles, 20), {}), None)
            next_batch = time.monotonic() + 5
        for message in consumer.consume(1_000, timeout=0.5):
            if not message.error():
                seen.setdefault(orjson.loads(message.value())["message_id"],
                                message.timestamp()[1] / 1000)
    print(f"warm-up: first document after {timeout_s - (deadline - time.monotonic()):.0f} s",
          file=sys.stderr)
    time.sleep(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--reorder-window", type=float, default=0.2)
    parser.add_argument("--dedupe-horizon", type=float,
                        default=OrderSettings.dedupe_horizon_s,
                        help="seconds a message id is remembered to drop duplicates")
    parser.add_argument("--beam-option", action="append", default=[],
                        help="extra pipeline option for the job (repeatable)")
    parser.add_argument("--latency-rate", type=float,
                        help="messages/s for the latency phase (default: half the throughput)")
    parser.add_argument("--permissions", choices=("keyed_state", "side_input"),
                        default="keyed_state", help="how the job joins activations")
    parser.add_argument("--delivery-shards", type=int, default=1,
                        help="Deliver's batching keys per application")
    parser.add_argument("--vehicle-shards", type=int, default=DEFAULT_VEHICLE_SHARDS,
                        help="keys of the ordering and activation step")
    parser.add_argument("--bundle-ms", type=int, default=FlinkSettings.max_bundle_time_ms,
                        help="the job's flink.max_bundle_time_ms")
    parser.add_argument("--checkpoint-ms", type=int,
                        default=FlinkSettings.checkpointing_interval_ms,
                        help="the job's flink.checkpointing_interval_ms")
    parser.add_argument("--raw-reader", choices=RAW_READERS, default=KafkaSettings.raw_reader,
                        help="what reads the raw topics (kafka.raw_reader)")
    parser.add_argument("--write", help="append the results to this Markdown file")
    parser.add_argument("--latencies-csv",
                        help="write each latency-phase document's produce and delivery times "
                             "(s) and the checkpoints' spans to this CSV file")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    out = f"/tmp/fleetstream-stream-bench-{run}"
    settings = settings_for(run, args.vehicles, args.reorder_window, out, args.permissions,
                            args.delivery_shards, args.vehicle_shards, args.bundle_ms,
                            args.checkpoint_ms, args.raw_reader, args.dedupe_horizon)
    sent_at: dict[str, float] = {}
    ensure_topics(settings)
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"bench-reader-{run}",
                         "auto.offset.reset": "earliest",
                         # fetch in large batches: the record timestamps, not the reading,
                         # give the latency, and the broker shares the job's two cores
                         "fetch.min.bytes": 1 << 20, "fetch.wait.max.ms": 500})
    # made before the clock starts, so that the simulator's Python does not take CPU from
    # the job while it works through the backlog; the plain loop runs while the job is idle
    backlog = simulated(args.vehicles, args.backlog)
    loop_s, _ = run_plain_loop([RawEnvelope(envelope["source"], 0, envelope["payload"].encode())
                                for _, envelope, _ in backlog], settings.config)
    loop_rate = args.backlog / loop_s
    known = tuple(flink_jobs.running_jobs())
    submit_stream(settings, args.beam_option)
    job = flink_jobs.wait_running(known=known)
    consumer.subscribe([settings.delivered_topic])
    seen: dict[str, float] = {}
    try:
        warm_up(settings, args.vehicles, consumer, seen)
        cpu_before = cpu_seconds(*CPU_MARKERS)
        produce(settings, sent(backlog, sent_at), None)
        backlog_ids = set(sent_at)
        delivered(consumer, seen, backlog_ids, 900)
        cpu_after = cpu_seconds(*CPU_MARKERS)
        cpu_ms = {m: (cpu_after[m] - cpu_before[m]) * 1000 / args.backlog for m in CPU_MARKERS}
        print(f"CPU per message: Python workers {cpu_ms[CPU_MARKERS[0]]:.2f} ms, "
              f"TaskManager {cpu_ms[CPU_MARKERS[1]]:.2f} ms, "
              f"Kafka broker {cpu_ms[CPU_MARKERS[2]]:.2f} ms", file=sys.stderr)
        times = sorted(seen[i] for i in backlog_ids)
        # sustained rate: from the first to the last backlog document
        rate = args.backlog * (len(times) - 1) / len(times) / max(times[-1] - times[0], 1e-9)
        print(f"throughput: {rate:,.0f} messages/s", file=sys.stderr)
        live: dict[str, float] = {}
        live_rate = args.latency_rate or rate / 2
        live_made = simulated(args.vehicles, int(live_rate * args.seconds))
        cpu_before, own_before, started = (cpu_seconds(*CPU_MARKERS), time.process_time(),
                                           time.monotonic())
        produce(settings, sent(live_made, live), live_rate)
        produced_s = time.monotonic() - started
        cpu_after, own_cores = (cpu_seconds(*CPU_MARKERS),
                                (time.process_time() - own_before) / produced_s)
        live_cores = {m: (cpu_after[m] - cpu_before[m]) / produced_s for m in CPU_MARKERS}
        delivered(consumer, seen, set(live), 300)
        latencies = sorted(latency_s(live[i], seen[i]) for i in live)
        p99_by_window = p99_per_window(live, seen, 10.0)
        spans = [(c["trigger_timestamp"] / 1000, c["latest_ack_timestamp"] / 1000)
                 for c in flink_jobs.completed_checkpoints(job)]
        during, outside = split_by_checkpoints(live, seen, spans)
        if args.latencies_csv:
            write_latencies(args.latencies_csv, live, seen, spans)
    finally:
        flink_jobs.cancel(job)
        consumer.close()
        shutil.rmtree(out, ignore_errors=True)       # the file sink's documents
    job_cpu_ms = cpu_ms[CPU_MARKERS[0]] + cpu_ms[CPU_MARKERS[1]]
    horizon_set = args.dedupe_horizon != OrderSettings.dedupe_horizon_s
    p50 = statistics.median(latencies)
    p99 = p99_of(latencies)
    table = [f"Streaming benchmark, {time.strftime('%Y-%m-%d')}, local Flink 1.19 (1 TaskManager, "
             f"parallelism 2) + Kafka 4.1 on {platform.machine()} with 2 cores shared by "
             f"Kafka, Flink, the Beam job server and the Python workers; {args.vehicles} vehicles, "
             f"reorder window {args.reorder_window} s, duplicate horizon "
             f"{args.dedupe_horizon:g} s, {args.permissions} activations; "
             f"latency to the `delivered` topic "
             f"(before sink batching); "
             f"`python benchmarks/stream_bench.py --backlog {args.backlog} --seconds "
             f"{args.seconds:g} --vehicles {args.vehicles} --permissions {args.permissions}"
             f"{f' --latency-rate {args.latency_rate:g}' if args.latency_rate else ''}"
             f"{f' --delivery-shards {args.delivery_shards}' if args.delivery_shards > 1 else ''}"
             f" --vehicle-shards {args.vehicle_shards} --bundle-ms {args.bundle_ms}"
             f" --checkpoint-ms {args.checkpoint_ms}"
             f" --raw-reader {args.raw_reader}"
             f"{f' --dedupe-horizon {args.dedupe_horizon:g}' if horizon_set else ''}"
             f"{''.join(' --beam-option=' + o for o in args.beam_option)}`:", "",
             "| measure | value |", "|---|---:|",
             f"| sustained throughput (backlog of {args.backlog:,}) | {rate:,.0f} messages/s |",
             f"| per core (2 cores) | {rate / 2:,.0f} messages/s |",
             f"| CPU per message, Python workers | {cpu_ms[CPU_MARKERS[0]]:.2f} ms |",
             f"| CPU per message, Flink TaskManager | {cpu_ms[CPU_MARKERS[1]]:.2f} ms |",
             f"| CPU per message, Kafka broker | {cpu_ms[CPU_MARKERS[2]]:.2f} ms |",
             f"| messages per CPU second of the job (workers + TaskManager) | "
             f"{1000 / job_cpu_ms:,.0f} |",
             f"| messages per CPU second, job and broker | "
             f"{1000 / sum(cpu_ms.values()):,.0f} |",
             f"| plain Python loop over the same messages, one core | {loop_rate:,.0f} "
             f"messages/s |",
             f"| job per CPU second / plain loop | {1000 / job_cpu_ms / loop_rate:.2f} |",
             f"| latency at {live_rate:,.0f} messages/s, p50 | {p50 * 1000:,.0f} ms |",
             f"| latency p99 | {p99 * 1000:,.0f} ms |",
             f"| latency max | {latencies[-1] * 1000:,.0f} ms |",
             f"| cores busy while producing at that rate: Python workers / TaskManager / "
             f"broker / this benchmark | "
             f"{' / '.join(f'{live_cores[m]:.2f}' for m in CPU_MARKERS)} / {own_cores:.2f} |",
             f"| latency p99 per 10 s of producing | "
             f"{', '.join(f'{p * 1000:,.0f}' for p in p99_by_window)} ms |",
             f"| latency p99 of documents in flight during a checkpoint / the others | "
             f"{p99_text(during)} / {p99_text(outside)} ({len(during):,} / {len(outside):,} "
             f"documents) |",
             f"| documents measured | {len(latencies):,} |"]
    publish(table, args.write)


def latency_s(sent: float, delivered: float) -> float:
    """Seconds from sending to delivery; the `delivered` record's timestamp is whole
    milliseconds, so a document delivered within the same millisecond counts as 0."""
    return max(0.0, delivered - sent)


def p99_per_window(sent_at: dict[str, float], seen: dict[str, float],
                   window_s: float) -> list[float]:
    """The p99 latency of the documents sent in each `window_s` of the latency phase, in order:
    a rising series is a job falling behind, a lone peak a stall (e.g. a checkpoint)."""
    start = min(sent_at.values())
    windows: dict[int, list[float]] = {}
    for document, sent in sent_at.items():
        windows.setdefault(int((sent - start) // window_s), []).append(
            latency_s(sent, seen[document]))
    return [p99_of(sorted(lat)) for _, lat in sorted(windows.items())]


def split_by_checkpoints(sent_at: dict[str, float], seen: dict[str, float],
                         spans: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Sorted latencies of the documents in flight while a checkpoint ran (sent before its last
    acknowledgement, delivered after its trigger), and of the others."""
    during, outside = [], []
    for document, sent in sent_at.items():
        done = seen[document]
        overlaps = any(sent <= acked and done >= triggered for triggered, acked in spans)
        (during if overlaps else outside).append(latency_s(sent, done))
    return sorted(during), sorted(outside)


def write_latencies(path: str, sent_at: dict[str, float], seen: dict[str, float],
                    spans: list[tuple[float, float]]) -> None:
    """One row per document (`document,sent,delivered`) and per checkpoint
    (`checkpoint,triggered,acknowledged`), in seconds."""
    with open(path, "w") as out:
        out.write("kind,start,end\n")
        out.writelines(f"document,{sent:.3f},{seen[i]:.3f}\n" for i, sent in sent_at.items())
        out.writelines(f"checkpoint,{start:.3f},{end:.3f}\n" for start, end in spans)


def p99_text(ascending: list[float]) -> str:
    return f"{p99_of(ascending) * 1000:,.0f} ms" if ascending else "-"


def p99_of(ascending: list[float]) -> float:
    """The 99th percentile of sorted values (the nearest rank below)."""
    return ascending[int(0.99 * (len(ascending) - 1))]


if __name__ == "__main__":
    main()
