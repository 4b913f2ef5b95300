"""Beam's two halves for the local Flink setup, at one version (`versions.BEAM`).

* Java: the Flink runner (which holds `FlinkJobServerDriver`), the job and
  expansion services and KafkaIO, as a jar folder assembled by Maven from the
  non-shaded modules (the shaded job-server and expansion-service jars are not
  served here).
* Python: a venv with the same apache-beam, for the SDK workers and for
  submitting pipelines to the job server (the submitting SDK, the workers and
  the job server must agree on the version).
"""
from __future__ import annotations

import os
from pathlib import Path

from fleetstream.local import versions
from fleetstream.local.venv import venv

#: the repository root, put on the workers' PYTHONPATH so they import fleetstream
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def beam_jars() -> Path:
    """The lib folder of the Beam Java side (job server, expansion service, KafkaIO)."""
    from fleetstream.local.java import jar_bundle

    return jar_bundle(f"beam-{versions.BEAM}", [
        f"org.apache.beam:beam-runners-flink-{versions.FLINK_MINOR}:{versions.BEAM}",
        f"org.apache.beam:beam-sdks-java-expansion-service:{versions.BEAM}",
        f"org.apache.beam:beam-sdks-java-io-kafka:{versions.BEAM}",
        f"org.apache.kafka:kafka-clients:{versions.KAFKA_CLIENTS_FOR_BEAM}",
        # the Java SDK harness (EMBEDDED environment) needs jamm, a "provided" dependency
        "com.github.jbellis:jamm:0.4.0",
        "org.slf4j:slf4j-simple:1.7.30",
        "org.slf4j:jcl-over-slf4j:1.7.30",
    ], exclusions=[
        # Confluent Schema Registry support of KafkaIO: not served by Maven Central
        "io.confluent:*",
    ])


def beam_python() -> Path:
    """The `python` of the venv holding apache-beam at the job server's version."""
    return venv(f"beam-{versions.BEAM}", [f"apache-beam=={versions.BEAM}", "orjson==3.13.0"]) \
        / "bin" / "python"


def beam_python_environment() -> dict[str, str]:
    """Environment for `beam_python()`: the project importable, and the venv's bin first
    on PATH (the worker pool starts each worker as plain `python`)."""
    python_path = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    path = [str(beam_python().parent), *filter(None, [os.environ.get("PATH")])]
    return {"PYTHONPATH": os.pathsep.join(python_path), "PATH": os.pathsep.join(path),
            "VIRTUAL_ENV": str(beam_python().parent.parent)}
