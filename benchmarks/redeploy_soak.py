"""Redeploy soak: submit and cancel the streaming job N times, metaspace after each.

    fleetstream dev up
    python benchmarks/redeploy_soak.py [--jobs 10] [--config flink-runner.yaml]

Each round submits the real streaming job (`submit_stream`, the settings of `--config`
with the job server, worker pool and expansion service of the options, and raw,
activation, dead-letter and delivered topics of its own: `soak-<run>.*`), waits until all
its tasks run, produces `--records` simulated messages to its raw topics, lets it run
`--run-seconds`, cancels it and waits until Flink reports it CANCELED. It then asks the
TaskManager's and the JobManager's JVMs for a full GC (`jcmd <pid> GC.run`, when they run
on this machine: metaspace of an unloaded class loader is only returned by a GC that
unloads classes) and prints, per round, the metaspace in use (MB) and the classes loaded
(loaded minus unloaded) of the TaskManager and of the JobManager, read from Flink's REST
metrics (`Status.JVM.Memory.Metaspace.Used`, `Status.JVM.ClassLoader.*`).

Before the cluster's Beam jars were on its own classpath, each round left ~53 MB of
metaspace on the TaskManager (each job's class loader stayed reachable); now the figures
are flat after the first round (docs/benchmarks.md, "Redeploy soak").

Exit status 1 when the TaskManager's metaspace after the last round exceeds that after
round 2 by more than `--max-growth-mb` (default 20 MB: a leaked job class loader is
~53 MB; round 1 is left out because the first job loads classes that stay, parent-first,
for every later job).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from fleetstream.io.kafka.producer import produce_envelopes
from fleetstream.runtime import flink_jobs
from fleetstream.pipelines.stream import ensure_topics, submit_stream
from fleetstream.settings.stream import StreamSettings, load_stream_settings
from fleetstream.simulator import simulate_keyed

MB = 1 << 20
#: how often Flink's REST server refreshes the metrics it serves
#: (`metrics.fetcher.update-interval`, 10 s by default)
METRICS_REFRESH_S = 10.0


def listening_pid(port: int) -> int | None:
    """The pid of the local process listening on TCP `port` (Linux /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def full_gc(pid: int | None) -> bool:
    """`jcmd <pid> GC.run`; False when there is no such local JVM or no jcmd."""
    jcmd = shutil.which("jcmd")
    if pid is None or jcmd is None:
        return False
    return subprocess.run([jcmd, str(pid), "GC.run"], capture_output=True,
                          check=False).returncode == 0


def readings(rest: str, taskmanager: str) -> tuple[tuple[float, int, int], ...]:
    """(metaspace MB, classes loaded now, threads) of the TaskManager and of the JobManager, as of
    now or later: Flink's REST server answers from a cache that it refreshes at most every
    METRICS_REFRESH_S, in the background, when asked."""
    for _ in range(2):       # the first request starts a refresh if one is due, the second
        for process in (taskmanager, None):      # one after it, which began after now
            flink_jobs.jvm_metrics(rest, process)
        time.sleep(METRICS_REFRESH_S + 1)
    return tuple(_summary(flink_jobs.jvm_metrics(rest, process))       # type: ignore
                 for process in (taskmanager, None))


def _summary(metrics: dict[str, float]) -> tuple[float, int, int]:
    return (metrics["Status.JVM.Memory.Metaspace.Used"] / MB,
            int(metrics["Status.JVM.ClassLoader.ClassesLoaded"]
                - metrics["Status.JVM.ClassLoader.ClassesUnloaded"]),
            int(metrics["Status.JVM.Threads.Count"]))


def soak_settings(args: argparse.Namespace, run: str) -> StreamSettings:
    """`--config`'s settings aimed at the options' servers, with topics of this run."""
    settings = load_stream_settings(args.config)
    return dataclasses.replace(
        settings,
        flink=dataclasses.replace(settings.flink, job_endpoint=args.job_endpoint,
                                  environment_config=args.worker_pool, savepoint_path=None),
        kafka=dataclasses.replace(settings.kafka, expansion_service=args.expansion_service,
                                  consumer_group=f"soak-{run}", start="earliest"),
        raw_topics={source: f"soak-{run}.raw.{source}" for source in settings.raw_topics},
        activations_topic=f"soak-{run}.activations",
        dead_letters_topic=f"soak-{run}.dead-letters",
        delivered_topic=f"soak-{run}.delivered" if settings.delivered_topic else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--jobs", "-n", type=int, default=10,
                        help="how many times to submit and cancel the job (default %(default)s)")
    parser.add_argument("--config", default="flink-runner.yaml",
                        help="the job's stream settings (default %(default)s); its servers and "
                             "topics are replaced by the options below and topics of the run")
    parser.add_argument("--job-endpoint", default="localhost:8099",
                        help="Beam's Flink job server (default %(default)s)")
    parser.add_argument("--flink-rest", default=flink_jobs.DEFAULT_REST,
                        help="the Flink cluster's REST API (default %(default)s)")
    parser.add_argument("--worker-pool", default="localhost:50000",
                        help="the Python SDK worker pool (default %(default)s)")
    parser.add_argument("--expansion-service", default="localhost:8088",
                        help="the KafkaIO expansion service (default %(default)s)")
    parser.add_argument("--run-seconds", type=float, default=15.0,
                        help="how long each job runs once all its tasks run "
                             "(default %(default)s)")
    parser.add_argument("--records", type=int, default=20,
                        help="simulated messages produced to each job's raw topics "
                             "(default %(default)s)")
    parser.add_argument("--no-gc", action="store_true",
                        help="do not force a full GC (jcmd GC.run) before each reading")
    parser.add_argument("--max-growth-mb", type=float, default=20.0,
                        help="fail when the TaskManager's metaspace grows more than this "
                             "from round 2 to the last round (default %(default)s)")
    args = parser.parse_args(argv)

    rest = args.flink_rest.rstrip("/")
    run = uuid.uuid4().hex[:8]
    settings = soak_settings(args, run)
    ensure_topics(settings)
    if flink_jobs.running_jobs(rest):
        print(f"note: jobs already running on {rest}: {flink_jobs.running_jobs(rest)}",
              file=sys.stderr)
    taskmanager = flink_jobs.taskmanagers(rest)[0]
    tm_pid = listening_pid(int(taskmanager.split("-")[0].rsplit(":", 1)[1]))
    jm_pid = listening_pid(int(rest.rsplit(":", 1)[1]))
    gc = not args.no_gc and full_gc(tm_pid) and full_gc(jm_pid)
    tm, jm = readings(rest, taskmanager)
    print(f"redeploy soak {run}: {args.jobs} jobs on {rest} (TaskManager {taskmanager}, "
          f"pid {tm_pid}; JobManager pid {jm_pid}); full GC before each reading: "
          f"{'yes' if gc else 'no'}")
    print(f"{'job':>4} {'to RUNNING s':>12} {'TM metaspace MB':>15} {'TM classes':>10} "
          f"{'TM threads':>10} {'JM metaspace MB':>15} {'JM classes':>10}")
    print(f"{'-':>4} {'':>12} {tm[0]:>15.1f} {tm[1]:>10,} {tm[2]:>10} {jm[0]:>15.1f} "
          f"{jm[1]:>10,}", flush=True)
    series = []
    for round_ in range(1, args.jobs + 1):
        known = tuple(flink_jobs.running_jobs(rest))
        started = time.monotonic()
        submit_stream(settings)
        job = flink_jobs.wait_running(rest, known=known)
        to_running = time.monotonic() - started
        if args.records:
            produce_envelopes(settings.kafka.bootstrap_servers,
                              simulate_keyed(12, messages=args.records, seed=round_,
                                             start_ms=int(time.time() * 1000)),
                              topic_of_source=settings.raw_topics)
        time.sleep(args.run_seconds)
        flink_jobs.cancel_and_wait(job, rest)
        if gc:
            full_gc(tm_pid)
            full_gc(jm_pid)
        tm, jm = readings(rest, taskmanager)
        series.append(tm[0])
        print(f"{round_:>4} {to_running:>12.1f} {tm[0]:>15.1f} {tm[1]:>10,} {tm[2]:>10} "
              f"{jm[0]:>15.1f} {jm[1]:>10,}", flush=True)
    print("TaskManager metaspace MB after each job: " + ", ".join(f"{m:.0f}" for m in series))
    if len(series) >= 3:
        growth = series[-1] - series[1]
        verdict = "FAIL" if growth > args.max_growth_mb else "ok"
        print(f"{verdict}: growth from job 2 to job {len(series)}: {growth:+.1f} MB "
              f"(limit {args.max_growth_mb:.0f} MB)")
        return 1 if growth > args.max_growth_mb else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
