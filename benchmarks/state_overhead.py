"""What writing the latest state to Redis costs the streaming job: messages/s with and without.

    fleetstream dev up
    python benchmarks/state_overhead.py [--rounds 2] [--backlog 30000] [--worker-pool HOST:PORT]
                                        [--write docs/benchmarks.md]

Each round runs the same backlog through the streaming job twice, with a `state:` section
(every mapped message's properties written to Redis) and without, alternating; the rate
is measured as in metrics_overhead.py. The Redis is the benchmark's own (the dev
configuration: append-only file fsynced every second, RDB snapshots at Redis's default
points, on a free port), emptied before each run: the shared dev Redis may hold other
work's data (the API benchmark leaves 100,000 vehicles, ~315 MB), and the snapshots that
the job's writes trigger would then fork and write all of it during the "on" runs.

While the backlog goes through, the CPU of each of the job's processes (the SDK workers of
the pool, the TaskManager, the Kafka broker, Redis) and the machine's idle share
(/proc/stat) are measured, so the cost can be told apart: more CPU per message, or waiting.
"""
from __future__ import annotations

import os
import statistics
from pathlib import Path

import redis
from metrics_overhead import ab_arguments, ab_table, run_ab, throughput
from report import publish

from fleetstream.dev.redis import RedisService
from fleetstream.dev.service import free_port, home

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a process so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        found.append((int(pid), parent, cmdline))
    return found


def _machine() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far (idle includes I/O wait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK, idle / _TICK


class ProcessCpu:
    """CPU seconds of the job's processes and the machine while entered, per group."""

    def __init__(self, pool_port: int, redis_pid: int) -> None:
        self._pool_port = pool_port
        self._redis_pid = redis_pid
        self.used: dict[str, float] = {}

    def _groups(self) -> dict[str, list[int]]:
        processes = _processes()
        pools = [pid for pid, _, cmd in processes
                 if f"worker_pool --service_port={self._pool_port}" in cmd]
        return {
            "SDK workers": [pid for pid, parent, _ in processes if parent in pools],
            "TaskManager": [pid for pid, _, cmd in processes if "TaskManagerRunner" in cmd],
            "Kafka": [pid for pid, _, cmd in processes
                      if f"-Dkafka.logs.dir={home()}/data/kafka" in cmd],
            "Redis": [self._redis_pid],
        }

    def _sample(self) -> dict[str, float]:
        sample = {name: sum(map(_cpu_of, pids)) for name, pids in self._pids.items()}
        sample["machine busy"], sample["machine idle"] = _machine()
        return sample

    def __enter__(self) -> "ProcessCpu":
        self._pids = self._groups()
        self._before = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        after = self._sample()
        self.used = {name: after[name] - self._before[name] for name in after}


def main() -> None:
    args = ab_arguments(__doc__)
    pool_port = int((args.worker_pool or "localhost:50000").rsplit(":", 1)[1])
    server = RedisService(free_port(), name="redis-state-overhead")
    server.start()
    client = redis.Redis(port=server.port)
    forks: list[int] = []
    cpu: dict[bool, list[dict[str, float]]] = {True: [], False: []}

    def with_state(on: bool) -> float:
        client.flushall()
        before = client.info("stats")["total_forks"]
        meter = ProcessCpu(pool_port, server.pid() or 0)
        rate = throughput(args.vehicles, args.backlog, server.url if on else None,
                          args.worker_pool, meter)
        if on:
            forks.append(client.info("stats")["total_forks"] - before)
        cpu[on].append({name: used * 1e6 / args.backlog for name, used in meter.used.items()})
        print("  µs per message: " + ", ".join(f"{name} {us:,.0f}"
                                              for name, us in cpu[on][-1].items()),
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
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
        "",
        *cpu_table(cpu),
    ], args.write)


def cpu_table(cpu: dict[bool, list[dict[str, float]]]) -> list[str]:
    """Markdown rows: median CPU µs per message of each process group, on and off."""
    names = list(cpu[True][0])
    rows = ["| CPU µs per message (median) | on | off | on - off |", "|---|---:|---:|---:|"]
    for name in names:
        on = statistics.median(run[name] for run in cpu[True])
        off = statistics.median(run[name] for run in cpu[False])
        rows.append(f"| {name} | {on:,.0f} | {off:,.0f} | {on - off:+,.0f} |")
    return rows


if __name__ == "__main__":
    main()
