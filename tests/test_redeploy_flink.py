"""Redeploying the streaming job leaves no metaspace behind on the TaskManager.

Each Beam job's classes used to be loaded in a class loader of its own that outlived the
cancelled job: ~53 MB of TaskManager metaspace per redeploy, `OutOfMemoryError: Metaspace`
after ~25 (mended in fleetstream.dev.flink.cluster_lib; benchmarks/redeploy_soak.py is
the long version of this test).
"""
from __future__ import annotations

import glob
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from fleetstream.io.kafka.producer import produce_envelopes
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.dev.flink import FlinkTaskManager
from fleetstream.runtime import flink_jobs
from fleetstream.pipelines.stream import submit_stream
from fleetstream.settings.stream import FlinkSettings, OrderSettings, StreamSettings
from fleetstream.settings.config import parse_config
from fleetstream.simulator import SOURCES, fleet_vins, simulate_keyed

pytest_plugins = ["fleetstream.dev.pytest_plugin"]
pytestmark = pytest.mark.servers

VEHICLES = 6
#: a leaked job class loader is ~53 MB; what a second and third job may add
TOLERANCE_MB = 15


def metaspace_mb(pid: int) -> float:
    """The JVM's metaspace in use after a full GC (which unloads unreachable class loaders)."""
    subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, check=True)
    reply = subprocess.run(["jstat", "-gc", str(pid)], capture_output=True, text=True,
                           check=True).stdout.split("\n")
    columns = dict(zip(reply[0].split(), reply[1].split()))
    return float(columns["MU"]) / 1024


def test_a_cancelled_job_leaves_no_metaspace_behind(kafka_service, flink_cluster,
                                                   tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    vins = fleet_vins(VEHICLES, seed=5)
    config = parse_config({
        "applications": [{"id": "fleet", "permissions": ["diagnostics.*", "charging.*",
                                                         "vehicle_location.*"],
                          "sink": {"type": "file", "path": str(tmp_path / "fleet"),
                                   "max_delay": 0.5}}],
        "activations": [{"vin": vin, "application_id": "fleet", "status": "approved",
                         "at": 1} for vin in vins]})
    raw_topics = {source: f"{run}.raw.{source}" for source in SOURCES}
    settings = StreamSettings(
        config, FlinkSettings(job_endpoint=flink_cluster.job_endpoint,
                              environment_config=flink_cluster.worker_pool,
                              checkpointing_interval_ms=2000),
        KafkaSettings(kafka_service.bootstrap, f"test-{run}", "earliest",
                      flink_cluster.expansion_service),
        raw_topics, f"{run}.activations", f"{run}.dead-letters", None,
        OrderSettings(reorder_window_s=0.5, dedupe_horizon_s=600))
    rest = flink_cluster.flink_rest
    taskmanager = FlinkTaskManager(rest_port=int(rest.rsplit(":", 1)[1])).pid()
    assert taskmanager is not None
    after = []
    for round_ in range(3):
        known = tuple(flink_jobs.running_jobs(rest))
        submit_stream(settings)
        job = flink_jobs.wait_running(rest, known=known)
        if round_ == 2:             # the job still does its work
            produce_envelopes(kafka_service.bootstrap,
                              simulate_keyed(VEHICLES, messages=30, seed=5, error_rate=0,
                                             duplicate_rate=0,
                                             start_ms=int(time.time() * 1000)),
                              topic_of_source=raw_topics)
            deadline = time.monotonic() + 90
            while not glob.glob(str(tmp_path / "fleet" / "*.jsonl")):
                assert time.monotonic() < deadline, flink_jobs.job_summary(job, rest)
                time.sleep(1)
        flink_jobs.cancel_and_wait(job, rest)
        time.sleep(2)               # the TaskManager lets go of the job's slots and jars
        after.append(metaspace_mb(taskmanager))
    print("TaskManager metaspace after each job (MB): " + ", ".join(f"{m:.0f}" for m in after))
    assert after[2] - after[0] <= TOLERANCE_MB, after
