"""Beam's two halves for the local Flink setup, at one version (`versions.BEAM`).

* Java: the Flink runner (which holds `FlinkJobServerDriver`), the job and
  expansion services and KafkaIO, as a jar folder assembled by Maven from the
  non-shaded modules (the shaded job-server and expansion-service jars are not
  served here).
* Python: the project's own environment, whose apache-beam is pinned to the
  same version, for the SDK workers and for submitting pipelines (the
  submitting SDK, the workers and the job server must agree on the version).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from fleetstream.runtime import versions

#: the repository root, put on the workers' PYTHONPATH so they import fleetstream
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def beam_jars() -> Path:
    """The lib folder of the Beam Java side (job server, expansion service, KafkaIO)."""
    from fleetstream.dev.java import jar_bundle

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
    """The Python that submits pipelines and runs SDK workers: this one.

    The project pins apache-beam to `versions.BEAM` (setup.py), so the submitting
    SDK, the workers and the Java job server agree without a second environment.
    """
    import apache_beam

    if apache_beam.__version__ != versions.BEAM:
        raise RuntimeError(
            f"apache-beam {apache_beam.__version__} is installed but the Flink job server is "
            f"Beam {versions.BEAM}; reinstall the project: pip install -e .")
    return Path(sys.executable)


def beam_python_environment() -> dict[str, str]:
    """Environment for workers: the project importable, and this Python's bin first on
    PATH (the worker pool starts each worker as plain `python`)."""
    python_path = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    path = [str(beam_python().parent), *filter(None, [os.environ.get("PATH")])]
    return {"PYTHONPATH": os.pathsep.join(python_path), "PATH": os.pathsep.join(path)}
