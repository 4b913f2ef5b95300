"""The Python SDK worker pool that Flink's tasks hand their Python steps to.

`python -m fleetstream.runtime.worker_pool --service_port=50000` (Beam's worker
pool servicer with a state cache) with `beam.beam_python()` (the project's Python, same apache-beam as the job server),
with the repository on PYTHONPATH so workers import `fleetstream`. Pipelines
use it with `--environment_type=EXTERNAL --environment_config=localhost:50000`.
"""
from __future__ import annotations

from fleetstream.dev.beam import beam_python, beam_python_environment
from fleetstream.dev.service import Service


class WorkerPool(Service):
    """Beam's Python worker pool service on `port`."""

    name = "workerpool"
    start_timeout_s = 120.0

    def __init__(self, port: int = 50000) -> None:
        super().__init__(port)

    def install(self) -> None:
        beam_python()

    def command(self) -> list[str]:
        return [str(beam_python()), "-m", "fleetstream.runtime.worker_pool",
                f"--service_port={self.port}"]

    def environment(self) -> dict[str, str]:
        return beam_python_environment()
