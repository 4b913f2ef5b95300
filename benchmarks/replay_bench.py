"""Replay benchmark: one million simulated raw messages through `replay` on the DirectRunner,
against a plain Python loop over the same mappers and permission filter, in one run.

    python benchmarks/replay_bench.py [--messages 1000000] [--workers 1 2] [--archive-s3]
                                      [--rounds 1] [--write docs/benchmarks.md]

The plain loop parses each envelope, maps it with its source's mapper, filters it
per application by activation and permissions and serialises each document:
everything the pipeline does per message except ordering, batching and writing
files. Rates are messages per second of wall time; the ratio compares the two
in the same run, since absolute numbers move with the machine's load. The CPU ratio
compares CPU seconds (the benchmark's process and its ended child processes, i.e. the
DirectRunner's workers): less moved by other processes on a busy machine.

With `--archive-s3` the same envelopes are also put in a raw archive
(`raw/<source>/yyyy/mm/dd/HH/`, gzip JSON lines, one file per source and
minute) in a local S3 server (moto, started if it is not running), and
`replay --archive` reads them back from there with each worker count.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import boto3
import orjson
import yaml
from plain_loop import run_plain_loop
from report import publish

from fleetstream.dev.moto import MotoService
from fleetstream.io.archive.format import encode_archive
from fleetstream.io.archive.layout import archive_file
from fleetstream.pipelines.replay import run_replay
from fleetstream.schemas.envelope import EnvelopeError, RawEnvelope, parse_envelope_line
from fleetstream.settings.config import load_config
from fleetstream.simulator import activations, simulate, write_envelopes

APPLICATIONS = [
    {"id": "fleet-manager", "permissions": ["diagnostics.*", "charging.*", "vehicle_location.*",
                                            "doors.*"]},
    {"id": "insurer", "permissions": ["diagnostics.odometer", "diagnostics.speed"]},
]


LOOP = "plain Python loop (1 core)"


def prepare(folder: Path, messages: int, vehicles: int,
            registered: int) -> tuple[Path, Path, int]:
    """The input file (cached by size), a configuration for it and its number of activation
    events: those of `registered` vehicles, the first `vehicles` of which send messages."""
    raw = folder / f"raw-{messages}.jsonl"
    if not raw.exists():
        started = time.perf_counter()
        write_envelopes(raw, simulate(vehicles, messages=messages, rate=1.0, seed=11))
        print(f"simulated {messages:,} envelopes in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
    events = activations(max(vehicles, registered), [a["id"] for a in APPLICATIONS], seed=11)
    with open(folder / "activations.jsonl", "wb") as out:
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({
        "applications": [{**a, "sink": {"type": "file", "path": str(folder / "unused")}}
                         for a in APPLICATIONS],
        "activations": "activations.jsonl"}))
    return raw, config, len(events)


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (DirectRunner workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def plain_loop(raw: Path, config_path: Path) -> tuple[float, float, int]:
    """Seconds, CPU seconds and documents for the same parsing, mapping and permission work
    in a plain loop."""
    config = load_config(config_path)
    cpu = cpu_seconds()
    seconds, documents = run_plain_loop(_envelopes(raw), config)
    return seconds, cpu_seconds() - cpu, documents


def _envelopes(raw: Path) -> Iterator[RawEnvelope]:
    with open(raw, "rb") as lines:
        for line in lines:
            try:
                yield parse_envelope_line(line)
            except EnvelopeError:
                continue


def fill_s3_archive(raw: Path, moto: MotoService) -> tuple[str, list[str]]:
    """Put `raw`'s envelopes in a raw archive on the local S3 server: its root and the
    replay's S3 options."""
    bucket = "fleetstream-bench-archive"
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto.endpoint_url,
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket=bucket)
    files: dict[tuple[str, int], list] = {}
    with open(raw, "rb") as lines:
        for line in lines:
            envelope = parse_envelope_line(line)
            files.setdefault((envelope.source, envelope.received_at_ms // 60_000),
                             []).append(envelope)
    started = time.perf_counter()
    for (source, minute), envelopes in files.items():
        window = (minute * 60_000, (minute + 1) * 60_000)
        name = archive_file("archive", source, window[0], window, 0, "jsonl.gz")
        s3.put_object(Bucket=bucket, Key=name, Body=encode_archive(envelopes, "jsonl.gz", name))
    print(f"archived {len(files)} files to s3://{bucket}/archive in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return f"s3://{bucket}/archive", [
        f"--s3_endpoint_url={moto.endpoint_url}", "--s3_region_name=us-east-1",
        "--s3_access_key_id=test", "--s3_secret_access_key=test"]


def pipeline(raw: Path, config_path: Path, workers: int, archive: str | None = None,
             options: list[str] = ()) -> tuple[float, float, int]:
    """Seconds, CPU seconds and documents for `replay` on the DirectRunner with `workers`
    processes, of `raw` or, when given, of the archive at `archive`."""
    out = Path(tempfile.mkdtemp(prefix="fleetstream-bench-"))
    args = ["--runner=DirectRunner", *options]
    if workers > 1:
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    try:
        started, cpu = time.perf_counter(), cpu_seconds()
        accounting = run_replay(None if archive else str(raw), load_config(config_path),
                                archive=archive, output=str(out), beam_args=args)
        elapsed = time.perf_counter() - started
        documents = sum(accounting.get(f"app/{a['id']}", "delivered") for a in APPLICATIONS)
        return elapsed, cpu_seconds() - cpu, documents
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--vehicles", type=int, default=2_000)
    parser.add_argument("--registered-vehicles", type=int, default=8_000,
                        help="vehicles with activation events (a fleet's registry is larger "
                             "than the part of it that sends in an hour)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="DirectRunner worker counts to measure")
    parser.add_argument("--archive-s3", action="store_true",
                        help="also replay the envelopes from a raw archive on local S3 (moto)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure everything this many times, interleaved, and keep each "
                             "run's least time (a busy machine's noise only ever adds time)")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "fleetstream-bench"))
    parser.add_argument("--write", help="append the results as a Markdown table to this file")
    args = parser.parse_args()
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    raw, config, events = prepare(folder, args.messages, args.vehicles, args.registered_vehicles)

    runs = [(f"replay, DirectRunner, {workers} worker(s)", workers, None, [])
            for workers in args.workers]
    if args.archive_s3:
        moto = MotoService()
        if not moto.running():
            moto.start()
        archive, options = fill_s3_archive(raw, moto)
        runs += [(f"replay --archive from local S3, {workers} worker(s)", workers, archive,
                  options) for workers in args.workers]
    best: dict[str, tuple[float, float, int]] = {}   # name -> least seconds, CPU s, documents
    for round_ in range(1, args.rounds + 1):
        measured = {LOOP: plain_loop(raw, config)}
        for name, workers, archive, options in runs:
            measured[name] = pipeline(raw, config, workers, archive, options)
        for name, (seconds, cpu, docs) in measured.items():
            least = best.get(name, (seconds, cpu, docs))
            best[name] = (min(seconds, least[0]), min(cpu, least[1]), docs)
            print(f"round {round_}, {name}: {args.messages / seconds:,.0f} messages/s "
                  f"({docs:,} documents), {cpu:.1f} CPU s", file=sys.stderr)
    loop_s, loop_cpu, _ = best[LOOP]
    rows = [(name, seconds, args.messages / seconds, docs, loop_s / seconds, cpu, loop_cpu / cpu)
            for name, (seconds, cpu, docs) in best.items()]

    table = [f"Replay benchmark, {args.messages:,} messages from {args.vehicles:,} simulated "
             f"vehicles (all four sources), {events:,} activation events, "
             f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}:", "",
             "| run | seconds | messages/s | documents | ratio to plain loop | CPU seconds "
             "| CPU ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {name} | {s:.1f} | {r:,.0f} | {d:,} | {ratio:.2f} | {cpu:.1f} "
              f"| {cpu_ratio:.2f} |" for name, s, r, d, ratio, cpu, cpu_ratio in rows]
    publish(table, args.write)


if __name__ == "__main__":
    main()
