"""`GET /v1/vehicles/{vin}` of one `fleetstream api` process, against a bare HGETALL loop.

    python benchmarks/api_bench.py --vehicles 100000 --duration 20 --connections 64 [--no-pin]

1. fill: `--vehicles` vehicles with a full state (every catalogue property, four tire
   pressures, a location) written by the real writer (`StateWriter`, one Lua call per
   vehicle, pipelined) into Redis database `--db` (emptied first): vehicles/s, and the
   memory it takes (INFO used_memory before/after, MEMORY USAGE of sampled keys);
2. activations: one approval per vehicle for the bench application, on a fresh topic;
3. `fleetstream api` as a subprocess pinned to CPU 0 (`taskset -c 0`), uvicorn with uvloop
   and httptools, one process;
4. ceiling: a bare redis-py HGETALL loop on random vehicles (this process, pinned to CPU 0
   while the API is idle): calls/s and p99;
5. saturation: `wrk` (Debian's package, pinned to CPU 1, one thread, a Lua script picking a
   random vehicle per request) with `--connections` keep-alive connections for
   `--duration` s: 200 answers/s and latency percentiles;
6. half rate: the same connections paced (wrk's per-request `delay`) to half the
   saturation rate: rate and p50/p99;
7. framework floor: uvicorn alone (same options and pinning) with a bare ASGI function
   answering a constant body of the same size, at saturation: what any API process of this
   stack can do on this machine now.
Redis is not pinned (it runs wherever the kernel puts it). `--no-pin` pins nothing. Needs the
local Redis and Kafka (`fleetstream dev up redis kafka`) and wrk.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
import yaml
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wrk import wrk_phase  # noqa: E402
from fleetstream.io.kafka.activations import activation_key, activation_value  # noqa: E402
from fleetstream.io.kafka.admin import Topic, create_topics  # noqa: E402
from fleetstream.io.redis.state_store import StateWriter  # noqa: E402
from fleetstream.schemas.activations import ActivationEvent  # noqa: E402
from fleetstream.schemas.catalogue import CAPABILITIES  # noqa: E402
from fleetstream.schemas.state import state_key, state_updates  # noqa: E402
from fleetstream.schemas.timestamps import iso_ms  # noqa: E402

KEY = "bench-key-0123456789abcdef"
START_MS = 1_772_352_000_000


def vin_of(n: int) -> str:
    return f"5YJ3E7EB0KF{n:06d}"


def full_state(n: int, rng: random.Random) -> dict:
    """Every catalogue property once (tires: four), as a mapper would emit them."""
    at = iso_ms(START_MS + rng.randrange(86_400_000))
    def num(value: float, unit: str) -> list:
        return [{"data": {"value": round(value, 3), "unit": unit}, "timestamp": at}]
    def bare(value) -> list:
        return [{"data": value, "timestamp": at}]
    return {
        "diagnostics": {
            "odometer": num(rng.uniform(0, 300_000), "kilometers"),
            "speed": num(rng.uniform(0, 180), "kilometers_per_hour"),
            "fuel_level": bare(round(rng.random(), 3)),
            "estimated_range": num(rng.uniform(0, 900), "kilometers"),
            "battery_voltage": num(rng.uniform(11, 15), "volts"),
            "tire_pressures": [{"data": {"location": loc, "pressure": {
                "value": round(rng.uniform(1.8, 2.8), 2), "unit": "bars"}}, "timestamp": at}
                for loc in ("front_left", "front_right", "rear_left", "rear_right")]},
        "charging": {
            "battery_level": bare(round(rng.random(), 3)),
            "estimated_range": num(rng.uniform(0, 600), "kilometers"),
            "status": bare("not_charging"), "charge_limit": bare(0.8),
            "plugged_in": bare("disconnected"),
            "charging_rate": num(rng.uniform(0, 150), "kilowatts")},
        "vehicle_location": {
            "coordinates": bare({"latitude": round(rng.uniform(47, 55), 6),
                                 "longitude": round(rng.uniform(6, 15), 6)}),
            "heading": num(rng.uniform(0, 360), "degrees")},
        "doors": {"locks_state": bare("locked")},
        "climate": {"outside_temperature": num(rng.uniform(-10, 30), "celsius"),
                    "inside_temperature": num(rng.uniform(10, 30), "celsius")},
        "ignition": {"state": bare("off")},
    }


def fill(url: str, vehicles: int) -> tuple[float, dict[str, float]]:
    """(vehicles/s written, memory figures) of a full state for every vehicle."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    before = client.info("memory")["used_memory"]
    rng = random.Random(1)
    updates = [(vin_of(n), state_updates(full_state(n, rng))) for n in range(vehicles)]
    writer = StateWriter(url, batch_size=500)
    started = time.perf_counter()
    writer.write(updates)
    elapsed = time.perf_counter() - started
    time.sleep(1)
    after = client.info("memory")["used_memory"]
    sample = [state_key(vin_of(rng.randrange(vehicles))) for _ in range(1000)]
    per_hash = sum(client.memory_usage(key, samples=0) for key in sample) / len(sample)
    geo = client.memory_usage("fs:geo", samples=0)
    encoding = client.object("encoding", sample[0])
    return vehicles / elapsed, {"used_bytes_per_vehicle": (after - before) / vehicles,
                                "hash_bytes": per_hash, "geo_bytes_per_vehicle": geo / vehicles,
                                "fields": client.hlen(sample[0]), "encoding": encoding}


def publish_approvals(bootstrap: str, vehicles: int) -> str:
    topic = f"activations-bench-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [Topic(topic, 1, {"cleanup.policy": "compact"})])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for n in range(vehicles):
        event = ActivationEvent(vin_of(n), "bench", "approved", START_MS)
        while True:
            try:
                producer.produce(topic, key=activation_key(event), value=activation_value(event))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    return topic


def hgetall_ceiling(url: str, vehicles: int, duration_s: float) -> tuple[float, float]:
    """(calls/s, p99 ms) of a bare HGETALL loop on random vehicles."""
    client = redis.Redis.from_url(url)
    rng = random.Random(2)
    latencies = []
    deadline = time.perf_counter() + duration_s
    while (now := time.perf_counter()) < deadline:
        client.hgetall(state_key(vin_of(rng.randrange(vehicles))))
        latencies.append(time.perf_counter() - now)
    latencies.sort()
    return len(latencies) / duration_s, latencies[int(len(latencies) * 0.99)] * 1000


def wrk_script(folder: Path, vehicles: int, delay_ms: float) -> Path:
    lines = ["math.randomseed(7)",
             "function request()",
             f"  return wrk.format('GET', string.format('/v1/vehicles/5YJ3E7EB0KF%06d', "
             f"math.random(0, {vehicles - 1})), {{['Authorization'] = 'Bearer {KEY}'}})",
             "end"]
    if delay_ms > 0:
        lines.append(f"function delay() return {delay_ms:.3f} end")
    path = folder / f"get-{delay_ms:.0f}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vehicles", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--db", type=int, default=12, help="Redis database (emptied)")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--port", type=int, default=18091)
    parser.add_argument("--no-pin", action="store_true",
                        help="leave the API, wrk and the ceiling loop to the scheduler (on a "
                             "machine busy with other work, pinning the API to one core "
                             "makes each Redis wait cost it a scheduling slice)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the state a previous run filled in (no fill, no memory)")
    args = parser.parse_args()
    url = f"redis://{args.redis}/{args.db}"
    pin = (lambda cpu: []) if args.no_pin else (lambda cpu: ["taskset", "-c", cpu])

    if args.reuse and redis.Redis.from_url(url).dbsize() > args.vehicles:
        print(f"fill: reusing the {args.vehicles:,} vehicles in {url}")
    else:
        fill_and_report(url, args.vehicles)
    run_api_phases(args, url, pin)


def fill_and_report(url: str, vehicles: int) -> None:
    rate, memory = fill(url, vehicles)
    print(f"fill: {vehicles:,} vehicles at {rate:,.0f} vehicles/s (one Lua call each, "
          f"{memory['fields']} fields); memory per vehicle: {memory['used_bytes_per_vehicle']:,.0f} "
          f"B used_memory delta, {memory['hash_bytes']:,.0f} B MEMORY USAGE of its hash "
          f"({memory['encoding'].decode()}), {memory['geo_bytes_per_vehicle']:,.0f} B in the "
          f"geo index -> {memory['used_bytes_per_vehicle'] * 1e6 / 2 ** 30:,.2f} GiB per "
          f"million vehicles")


def run_api_phases(args: argparse.Namespace, url: str, pin) -> None:
    topic = publish_approvals(args.kafka, args.vehicles)
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(yaml.safe_dump({"state": {"redis": url}, "applications": [{
            "id": "bench", "permissions": [f"{c}.*" for c in CAPABILITIES],
            "sink": {"type": "file", "path": str(Path(folder) / "unused")},
            "api_keys_env": "BENCH_API_KEYS"}]}))
        started = time.monotonic()
        api = subprocess.Popen(
            [*pin("0"), sys.executable, "-m", "fleetstream.pipelines.cli", "api",
             "--config", str(config), "--listen", f"127.0.0.1:{args.port}", "--kafka",
             args.kafka, "--activations-topic", topic], cwd=ROOT,
            env={**os.environ, "BENCH_API_KEYS": KEY,
                 "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
        try:
            base = f"http://127.0.0.1:{args.port}"
            while True:
                try:
                    answer = httpx.get(f"{base}/v1/vehicles/{vin_of(0)}",
                                       headers={"authorization": f"Bearer {KEY}"})
                    assert answer.status_code == 200, answer.text
                    break
                except httpx.TransportError:
                    if time.monotonic() - started > 120 or api.poll() is not None:
                        raise SystemExit("the API did not start")
                    time.sleep(0.2)
            print(f"api: ready in {time.monotonic() - started:.1f} s (read {args.vehicles:,} "
                  f"activations); an answer is {len(answer.content):,} bytes")
            if not args.no_pin:
                os.sched_setaffinity(0, {0})
            calls, p99 = hgetall_ceiling(url, args.vehicles, args.duration / 2)
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            where = "" if args.no_pin else ", CPU 0"
            print(f"ceiling: bare redis-py HGETALL loop{where}: {calls:,.0f} calls/s, "
                  f"p99 {p99:.2f} ms")
            cpu_before, wall_before = cpu_seconds(api.pid), time.monotonic()
            throughput, others, pct = wrk_phase(base, args.connections, args.duration,
                                                wrk_script(Path(folder), args.vehicles, 0),
                                                prefix=pin("1"))
            cpu = cpu_seconds(api.pid) - cpu_before
            wall = time.monotonic() - wall_before
            print(f"saturation (wrk, {args.connections} connections{where and ', CPU 1'}): "
                  f"{throughput:,.0f} answers/s ({others} non-200), p50 {pct['50']:.1f} ms, "
                  f"p99 {pct['99']:.1f} ms; {throughput / calls:.2f} of the ceiling; the API "
                  f"process used {cpu / wall:.0%} of a core, {cpu / (throughput * wall) * 1e6:,.0f}"
                  f" us of CPU per answer")
            delay_ms = args.connections / (throughput / 2) * 1000
            half, others, pct = wrk_phase(base, args.connections, args.duration,
                                          wrk_script(Path(folder), args.vehicles, delay_ms),
                                          prefix=pin("1"))
            print(f"half rate (wrk, {delay_ms:.1f} ms between a connection's requests): "
                  f"{half:,.0f} answers/s ({others} non-200), p50 {pct['50']:.1f} ms, "
                  f"p99 {pct['99']:.1f} ms")
        finally:
            api.terminate()
            api.wait(20)
        floor, others, floor_cpu = framework_floor(Path(folder), pin, args,
                                                   len(answer.content))
        print(f"framework floor (uvicorn, a bare ASGI function, a constant "
              f"{len(answer.content):,}-byte answer): {floor:,.0f} answers/s ({others} "
              f"non-200), {floor_cpu * 1e6:,.0f} us of CPU per answer; the API is "
              f"{throughput / floor:.2f} of it")


FLOOR_APP = """
import sys
import uvicorn
BODY = b"x" * int(sys.argv[2])
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY)),
           (b"etag", b'"e"'), (b"cache-control", b"private, no-cache")]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning",
            proxy_headers=False, server_header=False, lifespan="off")
"""


def framework_floor(folder: Path, pin, args: argparse.Namespace, size: int
                    ) -> tuple[float, int, float]:
    """(answers/s, non-200, CPU s per answer) of uvicorn answering a constant body (a bare
    ASGI function), at saturation."""
    script = folder / "floor_app.py"
    script.write_text(FLOOR_APP)
    server = subprocess.Popen([*pin("0"), sys.executable, str(script), str(args.port + 1),
                               str(size)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{args.port + 1}/v1/vehicles/x")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the framework floor app did not start")
                time.sleep(0.2)
        cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
        rate, others, _ = wrk_phase(f"http://127.0.0.1:{args.port + 1}",
                                    args.connections, args.duration,
                                    wrk_script(folder, args.vehicles, 0), prefix=pin("1"))
        cpu = cpu_seconds(server.pid) - cpu_before
        return rate, others, cpu / (rate * (time.monotonic() - wall_before))
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
