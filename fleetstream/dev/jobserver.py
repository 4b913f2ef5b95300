"""Beam's Flink job server, submitting portable pipelines to the local Flink cluster.

Runs `org.apache.beam.runners.flink.FlinkJobServerDriver` from the jar folder
of `beam.beam_jars()` with Beam's default ports: job service 8099, artifact
staging 8098, expansion 8097 (which also expands KafkaIO, being on its
classpath), with Beam 2.62's SDF checkpoint leak mended (`beam_patch`: its jar
goes first on the classpath). Pipelines reach it with:

    --runner=PortableRunner --job_endpoint=localhost:8099
    --environment_type=EXTERNAL --environment_config=localhost:50000
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from fleetstream.dev.beam import beam_jars
from fleetstream.dev.java import JAVA17_OPENS, java_bin, java_command
from fleetstream.dev.service import Service, ServiceError, home
from fleetstream.runtime.beam_patch import PatchError, patched_jar

#: Flink settings of the jobs it submits (the client side of the job): a network buffer
#: leaves for the next task when full or after this long (Flink's default, 100 ms, added up
#: to that much latency to each of the streaming job's shuffles at low rates)
JOB_FLINK_CONFIG = {"execution.buffer-timeout.interval": "10 ms"}


class FlinkJobServer(Service):
    """The job service on `port`; jobs go to the Flink REST API on `flink_rest_port`."""

    name = "jobserver"
    start_timeout_s = 90.0
    #: services `fleetstream dev up` starts first (jobs need a cluster to run on)
    requires = ("flink-tm",)

    def __init__(self, port: int = 8099, artifact_port: int = 8098, expansion_port: int = 8097,
                 flink_rest_port: int = 8081) -> None:
        super().__init__(port)
        self.artifact_port = artifact_port
        self.expansion_port = expansion_port
        self.flink_rest_port = flink_rest_port

    def install(self) -> None:
        beam_fixes_jar()

    def prepare(self) -> None:
        folder = self.data_dir / "flink-conf"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(JOB_FLINK_CONFIG))
        # each submission stages ~155 MB of jars here; what an earlier run left is unused
        # (Flink holds the running jobs' own copies), and it had filled the disk (60 GB)
        shutil.rmtree(self.data_dir / "artifacts", ignore_errors=True)

    def command(self) -> list[str]:
        return java_command(
            beam_jars(), "org.apache.beam.runners.flink.FlinkJobServerDriver",
            "--job-host=127.0.0.1", f"--job-port={self.port}",
            f"--artifact-port={self.artifact_port}", f"--expansion-port={self.expansion_port}",
            f"--flink-master=127.0.0.1:{self.flink_rest_port}",
            f"--artifacts-dir={self.data_dir / 'artifacts'}", "--clean-artifacts-per-job",
            f"--flink-conf-dir={self.data_dir / 'flink-conf'}",
            jvm_options=["-Xmx1g", *JAVA17_OPENS],
            # first, so that Flink loads the rebuilt runner classes from it (beam_patch)
            jars_first=[beam_fixes_jar()])


def beam_fixes_jar() -> Path:
    """`beam_patch.patched_jar` for the local job server, built under `$FLEETSTREAM_HOME/java`."""
    try:
        return patched_jar(beam_jars(), home() / "java", java_bin())
    except PatchError as error:
        raise ServiceError(str(error)) from None
