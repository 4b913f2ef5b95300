"""HTTP push throughput and latency of one gateway process, against a bare producer loop.

    python benchmarks/ingest_bench.py --duration 20 --connections 32 [--client aiohttp]

Starts `fleetstream ingest` (one process, a fresh topic) as a subprocess, then:
1. saturation: `--connections` keep-alive clients push ~400 B HMAC-signed payloads as fast
   as they are answered, for `--duration` s: accepted (202) requests/s. The client is
   `wrk` (Debian's package; a Lua script cycling through 20,000 pre-signed unique bodies)
   or, with `--client aiohttp` or without wrk, aiohttp clients in this process (which
   cost as much CPU as the gateway: on 2 cores they, not the gateway, set the rate);
2. latency: the same clients paced to half that rate (wrk: a per-request delay): p50/p99;
3. ceiling: a bare confluent-kafka produce loop (acks=all, idempotent, same records) in
   this process: records/s acknowledged.
Every 202 is then looked up in the topic (all must be there). Prints one summary line per
phase, the ratio push/ceiling, and the CPU time (user + system, all threads, from /proc)
the gateway process spent per accepted push against the loop's per record: on a shared,
noisy machine that, more than the rates, says what a push costs. Needs the local Kafka
(`fleetstream dev up kafka`) or another one given with `--bootstrap`.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import yaml
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wrk import wrk_phase  # noqa: E402
from fleetstream.io.kafka.admin import Topic, create_topics  # noqa: E402
from fleetstream.io.kafka.topic_reader import read_records  # noqa: E402

SECRET = "bench-secret"


def payload(n: int) -> bytes:
    """~400 B of JSON, unique per n."""
    body = (f'{{"eventId": "{uuid.uuid4()}", "vehicleId": "VIN{n % 1000:014d}", "n": {n}, '
            f'"data": [{{"path": "location", "value": {{"lat": 48.137154, "lon": 11.576124}}}}, '
            f'{{"path": "odometer", "value": {{"distance": {n * 1.5:.1f}, "unit": "km"}}}}, '
            f'{{"path": "battery", "value": {{"percentRemaining": 0.{n % 100:02d}}}}}]}}')
    return (body + " " * max(0, 400 - len(body))).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def push_phase(url: str, connections: int, duration_s: float,
                     rate: float | None) -> tuple[list[float], list[bytes], int]:
    """(latencies of 202s, bodies accepted, other answers) of `connections` clients, each
    paced to rate/connections per second when `rate` is given."""
    latencies: list[float] = []
    accepted: list[bytes] = []
    others = 0
    end = time.monotonic() + duration_s
    counter = iter(range(10**12))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal others
        interval = connections / rate if rate else 0.0
        next_at = time.monotonic()
        while time.monotonic() < end:
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            body = payload(next(counter))
            signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            started = time.perf_counter()
            async with session.post(url, data=body, headers={"SC-Signature": signature}) as r:
                await r.read()
                if r.status == 202:
                    latencies.append(time.perf_counter() - started)
                    accepted.append(body)
                else:
                    others += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    return latencies, accepted, others


WRK_BODIES = 20_000


def wrk_script(folder: Path, delay_ms: float) -> Path:
    """A wrk Lua script cycling through WRK_BODIES pre-signed unique bodies (a thread each
    starts at its own offset), waiting `delay_ms` before each request."""
    lines = ["local b = {}", "local s = {}"]
    for n in range(WRK_BODIES):
        body = payload(n)
        lines.append(f"b[{n + 1}] = [==[{body.decode()}]==]")
        lines.append(f's[{n + 1}] = "{hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}"')
    lines += [
        "local i = 0",
        "local counter = 0",
        "function setup(thread) counter = counter + 1; thread:set('offset', counter * 7919) end",
        "function init(args) i = offset or 0 end",
        "function request()",
        f"  i = i % {WRK_BODIES} + 1",
        "  return wrk.format('POST', '/v1/push/smartcar/VIN' .. (i % 1000), "
        "{['SC-Signature'] = s[i]}, b[i])",
        "end"]
    if delay_ms > 0:
        lines.append(f"function delay() return {delay_ms:.3f} end")
    path = folder / f"push-{delay_ms:.0f}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce_ceiling(bootstrap: str, topic: str, count: int) -> tuple[float, float]:
    """(records/s, CPU µs per record) of a bare acks=all idempotent producer loop writing
    `count` records."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 2,
                         "compression.type": "lz4"})
    failures = []
    records = [payload(n) for n in range(count)]
    started, cpu = time.perf_counter(), time.process_time()
    for n, body in enumerate(records):
        while True:
            try:
                producer.produce(topic, body, f"VIN{n % 1000:014d}".encode(),
                                 on_delivery=lambda e, _m: e and failures.append(e))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert not failures, failures[:3]
    return count / elapsed, cpu / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of each push phase (default %(default)s)")
    parser.add_argument("--connections", type=int, default=32,
                        help="keep-alive client connections (default %(default)s)")
    parser.add_argument("--port", type=int, default=18190)
    parser.add_argument("--client", choices=("wrk", "aiohttp"),
                        default="wrk" if shutil.which("wrk") else "aiohttp",
                        help="load generator (default %(default)s)")
    parser.add_argument("--ceiling-records", type=int, default=100_000,
                        help="records of the bare producer loop (default %(default)s)")
    args = parser.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topic, ceiling_topic = f"{prefix}.smartcar", f"{prefix}.ceiling"
    create_topics(args.bootstrap, [Topic(topic), Topic(ceiling_topic)])
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "ingest.yaml"
        config.write_text(yaml.safe_dump({
            "kafka": {"bootstrap": args.bootstrap},
            "http": {"listen": f"127.0.0.1:{args.port}"},
            "sources": {"smartcar": {"topic": topic, "push": {"auth": {
                "type": "hmac-sha256", "header": "SC-Signature",
                "secret_env": "BENCH_SECRET"}}}}}))
        gateway = subprocess.Popen(
            [sys.executable, "-m", "fleetstream.pipelines.cli", "ingest", "--config",
             str(config)], cwd=ROOT, stderr=subprocess.DEVNULL,
            env={**os.environ, "BENCH_SECRET": SECRET,
                 "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
        try:
            url = f"http://127.0.0.1:{args.port}/v1/push/smartcar"
            deadline = time.monotonic() + 60
            while True:
                try:
                    asyncio.run(push_phase(url, 1, 0.2, None))
                    break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline or gateway.poll() is not None:
                        raise SystemExit("the gateway did not start")
                    time.sleep(0.2)
            cpu_before = cpu_seconds(gateway.pid)
            if args.client == "wrk":
                throughput, others, pct = wrk_phase(url, args.connections, args.duration,
                                                    wrk_script(Path(folder), 0), threads=2)
                push_cpu_us = ((cpu_seconds(gateway.pid) - cpu_before)
                               / (throughput * args.duration) * 1e6)
                print(f"saturation (wrk): {throughput:,.0f} accepted/s over "
                      f"{args.connections} connections ({others} other answers), "
                      f"p50 {pct['50']:.1f} ms, p99 {pct['99']:.1f} ms")
                delay_ms = args.connections / (throughput / 2) * 1000
                half, others_paced, pct = wrk_phase(url, args.connections, args.duration,
                                                    wrk_script(Path(folder), delay_ms), threads=2)
                print(f"half rate (wrk, {delay_ms:.1f} ms between a connection's requests): "
                      f"{half:,.0f} accepted/s ({others_paced} other answers), "
                      f"p50 {pct['50']:.1f} ms, p99 {pct['99']:.1f} ms")
                accepted, accepted_paced = [], []
                answered = round(throughput * args.duration + half * args.duration)
            else:
                latencies, accepted, others = asyncio.run(
                    push_phase(url, args.connections, args.duration, None))
                throughput = len(accepted) / args.duration
                push_cpu_us = (cpu_seconds(gateway.pid) - cpu_before) / len(accepted) * 1e6
                print(f"saturation (aiohttp): {throughput:,.0f} accepted/s over "
                      f"{args.connections} connections ({others} other answers), p50 "
                      f"{percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
                      f"{percentile(latencies, 0.99) * 1000:.1f} ms")
                paced, accepted_paced, others_paced = asyncio.run(
                    push_phase(url, args.connections, args.duration, throughput / 2))
                print(f"half rate ({throughput / 2:,.0f}/s offered): "
                      f"{len(accepted_paced) / args.duration:,.0f} accepted/s "
                      f"({others_paced} other answers), p50 "
                      f"{percentile(paced, 0.5) * 1000:.1f} ms,"
                      f" p99 {percentile(paced, 0.99) * 1000:.1f} ms")
                answered = len(accepted) + len(accepted_paced)
        finally:
            gateway.terminate()
            gateway.wait(30)
    ceiling, ceiling_cpu_us = produce_ceiling(args.bootstrap, ceiling_topic,
                                              args.ceiling_records)
    print(f"ceiling: bare confluent-kafka produce loop (acks=all) {ceiling:,.0f} records/s")
    print(f"ratio push/ceiling: {throughput / ceiling:.2f}")
    print(f"CPU per record: gateway {push_cpu_us:,.0f} µs per accepted push (saturation), "
          f"bare loop {ceiling_cpu_us:,.1f} µs")
    records = [r.value() for r in read_records(args.bootstrap, topic, timeout_s=30)]
    if args.client == "wrk":   # bodies repeat over the run: compare counts (wrk rounds s)
        print(f"records in Kafka: {len(records):,}; 2xx answers: about {answered:,}")
        return 0 if len(records) >= answered * 0.99 else 1
    written = set(records)
    lost = [body for body in accepted + accepted_paced if body not in written]
    print(f"acknowledged by Kafka: {answered - len(lost)} of {answered} accepted pushes")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
