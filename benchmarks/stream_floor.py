"""The floor under stream_bench: the streaming job's runner and transport, with none of its work.

    fleetstream dev up
    python benchmarks/stream_floor.py [--messages 100000] [--timers] [--deliver]
                                      [--write docs/benchmarks.md]

A Beam job on the local Flink cluster (parallelism 2, the streaming job's options) reads
one topic of simulated raw records with FleetStream's Python Kafka reader, groups each
bundle's records per key (64 keys, as the vehicle shards, `GroupBatchesInBundle`), passes
them through a keyed step that keeps one counter per key in state, and writes every record
back to Kafka with FleetStream's producer. That is the shape of the streaming job (read,
shuffle to keyed state, produce) without mapping, ordering, permissions or sinks, so its
CPU per message is what the runner costs on this machine before FleetStream does anything.
Like stream_bench, the records are produced as fast as possible once the job runs, and the
rate is from the first to the last record on the output topic. Two options add back one
piece of the job each, to price it: `--timers` (the keyed step sets a processing-time
timer per call, as the reorder window's flush timers) and `--deliver` (the keyed step's
output also goes through FleetStream's `Deliver`, a second keyed stage, to a file sink).
"""
from __future__ import annotations

import argparse
import platform
import random
import shutil
import sys
import time
import uuid
import zlib

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp
from confluent_kafka import Consumer
from report import publish
from stream_bench import BOOTSTRAP, CPU_MARKERS, cpu_seconds, settings_for

from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.partition_reader import ReadKafkaPartitions
from fleetstream.io.kafka.producer import AckedProducer
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.io.kafka.transforms import WriteJsonToKafka
from fleetstream.io.sinks.registry import application_sink
from fleetstream.runtime import flink_jobs
from fleetstream.runtime.group_in_bundle import GroupBatchesInBundle
from fleetstream.runtime.job_streams import release_job_streams
from fleetstream.schemas.delivery import Record
from fleetstream.settings.config import parse_config
from fleetstream.transforms.deliver import Deliver
from fleetstream.transforms.order_and_permit_keyed import DEFAULT_VEHICLE_SHARDS

#: whose CPU is counted, as in stream_bench
MARKERS = dict(zip(("Python workers", "TaskManager", "Kafka broker"), CPU_MARKERS))


class _CountPerKeyFn(beam.DoFn):
    """(key, records) -> the records as (key, value) pairs; counts them per key in state."""

    COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())

    def process(self, element: tuple[int, list], count=beam.DoFn.StateParam(COUNT)):
        key, records = element
        count.write((count.read() or 0) + len(records))
        yield [(key, value) for _, _, value in records]


class _CountAndWaitPerKeyFn(beam.DoFn):
    """As _CountPerKeyFn, and each call sets a processing-time timer 0.2 s ahead, as the
    keyed step sets its flush timers for the reorder window; the timer reads the counter."""

    COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())
    WAIT = TimerSpec("wait", TimeDomain.REAL_TIME)

    def __init__(self) -> None:
        self._now = Timestamp.now     # an attribute: this module is __main__ on the workers

    def process(self, element: tuple[int, list], count=beam.DoFn.StateParam(COUNT),
                wait=beam.DoFn.TimerParam(WAIT)):
        key, records = element
        count.write((count.read() or 0) + len(records))
        wait.set(self._now() + 0.2)
        yield [(key, value) for _, _, value in records]

    @on_timer(WAIT)
    def on_wait(self, count=beam.DoFn.StateParam(COUNT)) -> None:
        count.read()


class _AsRecordsFn(beam.DoFn):
    """(key, value) lists -> (application, Record) lists, for FleetStream's Deliver."""

    def __init__(self) -> None:
        self._record = Record

    def process(self, pairs: list):
        yield [("floor", self._record(str(key), f"{key}-{n}", 0, value))
               for n, (key, value) in enumerate(pairs)]


def build(pipeline: beam.Pipeline, kafka: KafkaSettings, source: str, target: str, group: str,
          timers: bool = False, deliver_to: str | None = None) -> None:
    """The floor job; `timers`: the keyed step sets a timer per call; `deliver_to`: the
    keyed step's output also goes through FleetStream's Deliver to a file sink there."""
    # defaults, not globals: this module is __main__, which the workers do not have
    def key_of(record: tuple[str, int, bytes], crc32=zlib.crc32,
               shards: int = DEFAULT_VEHICLE_SHARDS) -> int:
        return crc32(record[2][:64]) % shards

    pairs = (pipeline
             | "Read" >> ReadKafkaPartitions(kafka.bootstrap_servers, [source], group)
             | "GroupPerKey" >> GroupBatchesInBundle(key_of, int)
             | "CountPerKey" >> beam.ParDo(_CountAndWaitPerKeyFn() if timers
                                           else _CountPerKeyFn()))
    _ = pairs | "Write" >> WriteJsonToKafka(kafka, target, batches=True)
    if deliver_to:
        applications = parse_config({"applications": [
            {"id": "floor", "permissions": ["diagnostics.*"],
             "sink": {"type": "file", "path": deliver_to, "max_delay": 1}}]}).applications
        _ = (pairs
             | "AsRecords" >> beam.ParDo(_AsRecordsFn())
             | "Deliver" >> Deliver(applications, application_sink, batches=True))


def payloads(count: int, size: int) -> list[bytes]:
    """Distinct JSON-like payloads of about `size` bytes (simulated raw records' size)."""
    rng = random.Random(3)
    filler = "x" * max(0, size - 60)
    return [f'{{"vin":"VIN{rng.randrange(200):05d}","n":{n},"f":"{filler}"}}'.encode()
            for n in range(count)]


def count_until(consumer: Consumer, expected: int, timeout_s: float) -> tuple[float, float]:
    """Consume until `expected` records arrived: the first and last record times (s)."""
    first = last = None
    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"{expected - seen} records did not arrive within {timeout_s:.0f} s")
        for message in consumer.consume(10_000, timeout=1.0):
            if message.error():
                continue
            at = message.timestamp()[1] / 1000
            first = at if first is None else min(first, at)
            last = at if last is None else max(last, at)
            seen += 1
    return first, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=400, help="bytes per record")
    parser.add_argument("--timers", action="store_true",
                        help="the keyed step sets a processing-time timer per call")
    parser.add_argument("--deliver", action="store_true",
                        help="also pass the keyed step's output through Deliver to a file sink")
    parser.add_argument("--write", help="append the results to this Markdown file")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    source, target = f"floor-{run}.in", f"floor-{run}.out"
    create_topics(BOOTSTRAP, [Topic(source, 16), Topic(target, 4)])
    records = payloads(args.messages, args.size)
    settings = settings_for(run, 1, 0.2, "/tmp/unused")
    pipeline = beam.Pipeline(options=settings.flink.pipeline_options())
    out = f"/tmp/fleetstream-floor-{run}"
    build(pipeline, settings.kafka, source, target, f"floor-{run}", args.timers,
          out if args.deliver else None)
    known = tuple(flink_jobs.running_jobs())
    release_job_streams(pipeline.run())
    job = flink_jobs.wait_running(known=known)
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"floor-reader-{run}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([target])
    try:
        producer = AckedProducer(BOOTSTRAP)
        producer.send(source, b"warm-up", b"{}")    # the job is up once this comes out
        producer.flush(60)
        count_until(consumer, 1, 300)
        time.sleep(3)
        before = cpu_seconds(*MARKERS.values())
        for n, value in enumerate(records):
            producer.send(source, str(n % 200).encode(), value)
        producer.flush(120)
        first, last = count_until(consumer, args.messages, 900)
        after = cpu_seconds(*MARKERS.values())
    finally:
        flink_jobs.cancel(job)
        consumer.close()
        shutil.rmtree(out, ignore_errors=True)
    rate = args.messages / max(last - first, 1e-9)
    cpu_ms = {name: (after[m] - before[m]) * 1000 / args.messages for name, m in MARKERS.items()}
    job_ms = cpu_ms["Python workers"] + cpu_ms["TaskManager"]
    print(f"floor: {rate:,.0f} messages/s; CPU ms/message {cpu_ms}", file=sys.stderr)
    table = [f"Streaming floor, {time.strftime('%Y-%m-%d')}, local Flink 1.19 (parallelism 2) + "
             f"Kafka 4.1 on {platform.machine()}, 2 shared cores; read -> group per key -> "
             f"keyed counter{' with a timer per call' if args.timers else ''} -> produce"
             f"{' and Deliver to a file sink' if args.deliver else ''}, {args.size}-byte "
             f"records; `python benchmarks/stream_floor.py --messages {args.messages} "
             f"--size {args.size}{' --timers' if args.timers else ''}"
             f"{' --deliver' if args.deliver else ''}`:", "",
             "| measure | value |", "|---|---:|",
             f"| sustained throughput (backlog of {args.messages:,}) | {rate:,.0f} messages/s |",
             *(f"| CPU per message, {name} | {ms:.3f} ms |" for name, ms in cpu_ms.items()),
             f"| messages per CPU second of the job (workers + TaskManager) | "
             f"{1000 / job_ms:,.0f} |",
             f"| messages per CPU second, job and broker | "
             f"{1000 / sum(cpu_ms.values()):,.0f} |"]
    publish(table, args.write)


if __name__ == "__main__":
    main()
