"""A standalone Flink session cluster: one JobManager and one TaskManager with 2 slots.

Flink comes from PyPI's `apache-flink` and `apache-flink-libraries` wheels,
installed with `--no-deps` in a venv of its own (`$FLEETSTREAM_HOME/venvs/`);
their `pyflink/` folder is a complete FLINK_HOME. Both processes run in the
foreground (`bin/jobmanager.sh start-foreground`, `bin/taskmanager.sh
start-foreground`) with `FLINK_CONF_DIR=$FLEETSTREAM_HOME/data/flink/conf`,
whose `config.yaml` is the shipped one with loopback addresses, the REST port
and 2 task slots. The web UI and REST API are on http://127.0.0.1:8081.

Beam's runner jars are on both processes' own classpath, and classes resolve
parent-first (`cluster_lib`): a Beam job's classes are then loaded once per
process instead of once per job, since a cancelled job's class loader was never
freed (~53 MB of TaskManager metaspace per redeploy, docs/runtime.md).
"""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from fleetstream.dev.java import java_bin
from fleetstream.dev.service import Service, ServiceError, home
from fleetstream.dev.venv import site_packages, venv
from fleetstream.runtime import versions

TASK_SLOTS = 2
#: jars of the Beam bundle that the cluster's classpath must not get: Flink's own modules
#: (the runner is built against 1.19.0; the cluster's flink-dist is newer) and slf4j (Flink
#: has slf4j-api and binds it to log4j; slf4j-simple would take over its logging)
CLUSTER_LIB_EXCLUDED = ("flink-", "slf4j-")
#: a starting JobManager keeps the retained checkpoints of this many jobs, the newest
KEPT_JOB_CHECKPOINTS = 20
#: the ports Flink's Prometheus reporter serves /metrics on: JobManager, TaskManager
PROMETHEUS_PORTS = (9249, 9250)


def flink_home() -> Path:
    """FLINK_HOME inside the Flink venv (installed on first use)."""
    folder = venv(f"flink-{versions.FLINK}", [f"apache-flink=={versions.FLINK}",
                                              f"apache-flink-libraries=={versions.FLINK}"],
                  no_deps=True)
    return site_packages(folder) / "pyflink"


def cluster_dir(name: str) -> Path:
    """A folder of the cluster's own: conf, tmp, checkpoints, savepoints."""
    return home() / "data" / "flink" / name


def conf_dir() -> Path:
    """The FLINK_CONF_DIR both processes share."""
    return cluster_dir("conf")


def cluster_lib() -> Path:
    """FLINK_LIB_DIR of the JobManager and TaskManager: Flink's own `lib/` jars, then Beam's
    (the job server's classpath: the rebuilt runner classes first, `beam_patch`).

    Workaround of a class loader leak: each Beam job used to bring its jars (~155 MB, the
    job server's classpath, `FlinkJobServer`) and Flink loaded their classes child-first,
    in a class loader of the job's own. Threads that the job starts and nothing stops (the
    embedded Java SDK harness's FinalizeBundleHandler cleanup loop, vendored gRPC's timer
    and destroyer pools, DataBufferOutboundFlusher executors) kept every cancelled job's
    loader reachable, so its classes were never unloaded: ~53 MB of TaskManager metaspace
    per redeploy, `OutOfMemoryError: Metaspace` after ~25 (heap dump: docs/runtime.md).
    Stopping each such thread would be whack-a-mole across Beam, its vendored gRPC and
    KafkaIO; with the classes parent-first the threads still linger (a few per job, idle)
    but hold nothing per job. Upstream: apache/beam#25510 and #32372 (open: metaspace grows with every
    Beam job submitted to a session cluster), FLINK-28248 (open; its reproducer is Beam's).
    Flink's remedy for such leaks ("Debugging Classloading": avoid dynamic class loading)
    is to put the jars in the cluster's `lib/` and resolve classes parent-first
    (`classloader.resolve-order: parent-first`, set by FlinkJobManager): a job's staged jars
    then bring nothing the cluster has not already loaded once, and there is nothing per job
    left to leak. All of `classloader.resolve-order` rather than
    `classloader.parent-first-patterns.additional: org.apache.beam.`, because Beam's classes
    use joda-time, kafka-clients, jackson, protobuf, ...: loaded parent-first by Beam and
    child-first by Java deserialisation in the job's loader, the two copies of a class
    collide. What lets it go: a Beam (or Flink) release whose per-job loader is freed,
    measured with benchmarks/redeploy_soak.py; in production, a cluster per job (Flink's
    application mode) has no redeploys to leak across.

    Built as symlinks under `data/flink/lib/`; only changed links are rewritten, so a
    TaskManager starting beside a running JobManager leaves the JobManager's jars alone.
    """
    from fleetstream.dev.beam import beam_jars
    from fleetstream.dev.jobserver import beam_fixes_jar

    shipped = flink_home() / "lib"
    beam = beam_jars()
    wanted: dict[str, Path] = {jar.name: jar for jar in shipped.glob("*.jar")}
    # Flink's scripts put the jars of FLINK_LIB_DIR (and of its folders) on the classpath in
    # sorted order, so the rebuilt classes ("beam/0-...") come before Beam's own
    fixes = beam_fixes_jar()
    wanted[f"beam/0-{fixes.name}"] = fixes
    wanted.update({f"beam/{jar.name}": jar for jar in sorted(beam.glob("*.jar"))
                   if not jar.name.startswith(CLUSTER_LIB_EXCLUDED)})
    folder = cluster_dir("lib")
    (folder / "beam").mkdir(parents=True, exist_ok=True)
    for link in [*folder.glob("*.jar"), *folder.glob("beam/*.jar")]:
        if link.relative_to(folder).as_posix() not in wanted:
            link.unlink()
    for name, target in wanted.items():
        link = folder / name
        if not (link.is_symlink() and Path(link.readlink()) == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    return folder


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        config = config.setdefault(key, {})
    config[leaf] = value


def overview(rest_port: int = 8081) -> dict[str, Any] | None:
    """The cluster's REST `/overview`, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/overview", timeout=2) as reply:
            return json.load(reply)
    except (OSError, ValueError):
        return None


class _FlinkProcess(Service):
    """A Flink process run by one of FLINK_HOME's `bin/<script> start-foreground`."""

    start_timeout_s = 180.0
    script: str

    def install(self) -> None:
        flink_home()
        cluster_lib()

    def environment(self) -> dict[str, str]:
        java = Path(java_bin()).resolve()
        return {"FLINK_CONF_DIR": str(conf_dir()), "FLINK_LOG_DIR": str(self.log_path.parent),
                "JAVA_HOME": str(java.parent.parent),
                # Flink's jars and Beam's: see cluster_lib
                "FLINK_LIB_DIR": str(cluster_lib())}

    def command(self) -> list[str]:
        return ["bash", str(flink_home() / "bin" / self.script), "start-foreground"]

    def remove_stale_working_dirs(self, prefix: str) -> None:
        """Delete earlier processes' working folders (`<prefix>_*` in Flink's tmp folder:
        up to ~3 GB each, of cached job jars), which a stopped process leaves behind."""
        for folder in cluster_dir("tmp").glob(f"{prefix}_*"):
            shutil.rmtree(folder, ignore_errors=True)


class FlinkJobManager(_FlinkProcess):
    """The JobManager (dispatcher, REST API); `port` is the REST port."""

    name = "flink-jm"
    script = "jobmanager.sh"

    def __init__(self, port: int = 8081, rpc_port: int = 6123,
                 metrics_reporter: bool = True) -> None:
        """`metrics_reporter=False` leaves Prometheus's reporter out (to measure its cost)."""
        super().__init__(port)
        self.rpc_port = rpc_port
        self.metrics_reporter = metrics_reporter

    def prepare(self) -> None:
        shipped = flink_home() / "conf"
        folder = conf_dir()
        folder.mkdir(parents=True, exist_ok=True)
        for log_config in shipped.glob("log4j*.properties"):
            shutil.copy(log_config, folder / log_config.name)
        config = yaml.safe_load((shipped / "config.yaml").read_text()) or {}
        for key, value in {
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.memory.process.size": "1600m",
            # every Beam job brings ~155 MB of jars: room for several (re)submissions
            "jobmanager.memory.jvm-metaspace.size": "768m",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": TASK_SLOTS,
            "taskmanager.memory.process.size": "6144m",
            "taskmanager.memory.jvm-metaspace.size": "1536m",
            # Beam's gRPC channels take direct memory that a cancelled job does not give back:
            # with Flink's default (~340 MB in all) the TaskManager ran out after ~15 jobs
            "taskmanager.memory.framework.off-heap.size": "512m",
            "taskmanager.memory.task.off-heap.size": "1024m",
            "state.checkpoints.dir": cluster_dir("checkpoints").as_uri(),
            "state.savepoints.dir": cluster_dir("savepoints").as_uri(),
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.port,
            "parallelism.default": 1,
            # Beam's jars are on the cluster's classpath (cluster_lib): a job's own copies
            # are not loaded again, in a class loader per job that redeploys leaked
            "classloader.resolve-order": "parent-first",
            "io.tmp.dirs": str(cluster_dir("tmp")),
            # a finished job's jars (~155 MB a job) leave the TaskManager's blob cache after
            # this many seconds (Flink's default, an hour, kept ~6 GB through the test suite)
            "blob.service.cleanup.interval": 60,
        }.items():
            _set(config, key, value)
        if self.metrics_reporter:
            # metrics for Prometheus (dev/prometheus.py scrapes both ports): the JobManager
            # takes the first free port of the range, the TaskManager the next. Flink 1.19's
            # reporter has no bind-address option: it listens on every interface.
            _set(config, "metrics.reporter.prom.factory.class",
                 "org.apache.flink.metrics.prometheus.PrometheusReporterFactory")
            _set(config, "metrics.reporter.prom.port",
                 f"{PROMETHEUS_PORTS[0]}-{PROMETHEUS_PORTS[1]}")
        cluster_dir("tmp").mkdir(parents=True, exist_ok=True)
        self.remove_stale_working_dirs("jm")
        self.prune_retained_checkpoints()
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def prune_retained_checkpoints(self, keep: int = KEPT_JOB_CHECKPOINTS) -> None:
        """Delete the retained checkpoints of all but the `keep` newest jobs.

        A cancelled job's last checkpoint stays so that it can be restored, but every
        job leaves one: the test suite's jobs had left 439 folders (843 MB) in a day.
        """
        folder = cluster_dir("checkpoints")
        jobs = sorted((job for job in folder.glob("*") if job.is_dir()),
                      key=lambda job: job.stat().st_mtime, reverse=True)
        for job in jobs[keep:]:
            shutil.rmtree(job, ignore_errors=True)

    def ready(self) -> bool:
        return overview(self.port) is not None


class FlinkTaskManager(_FlinkProcess):
    """The TaskManager with 2 slots; `port` is its RPC port, `rest_port` the JobManager's."""

    name = "flink-tm"
    script = "taskmanager.sh"
    #: services `fleetstream dev up` starts first
    requires = ("flink-jm",)

    def __init__(self, port: int = 6122, rest_port: int = 8081) -> None:
        super().__init__(port)
        self.rest_port = rest_port

    def prepare(self) -> None:
        """Uses the JobManager's config (start that first): only the RPC port is set here."""
        config_path = conf_dir() / "config.yaml"
        if not config_path.exists():
            raise ServiceError(f"{self.name}: {config_path} is missing; start flink-jm first")
        config = yaml.safe_load(config_path.read_text())
        _set(config, "taskmanager.rpc.port", self.port)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.remove_stale_working_dirs("tm")

    def ready(self) -> bool:
        status = overview(self.rest_port)
        return bool(status) and status.get("slots-total", 0) >= TASK_SLOTS
