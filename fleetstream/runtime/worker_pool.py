"""Beam's Python SDK worker pool, with a state cache: the workers Flink hands Python steps to.

    python -m fleetstream.runtime.worker_pool --service_port 50000 [--state_cache_mb 1024]

Pipelines reach it with `--environment_type=EXTERNAL --environment_config=HOST:50000`
(locally, or as a sidecar of each Flink TaskManager). Beam's own
`apache_beam.runners.worker.worker_pool_main` starts every worker with no state
cache, so each keyed-state read of OrderPerVehicle, OrderAndPermitKeyed and
Deliver became a round trip to Flink: a 60,000-message backlog spent minutes on
state reads. This entry point is the same servicer with a cache, and it starts
each worker through `fleetstream.runtime.sdk_worker`, which sizes cached state
values cheaply (Beam's own sizing scans every loaded module per cache write).

Gap it fills: `worker_pool_main` has no option for the workers' state cache. No
upstream issue is cited. TODO: remove once Beam's worker pool takes a state cache size
(and `sdk_worker` is gone), then run `apache_beam.runners.worker.worker_pool_main`.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
import traceback
from typing import Sequence

from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

DEFAULT_STATE_CACHE_MB = 1024


class WorkerPoolServicer(BeamFnExternalWorkerPoolServicer):
    """Beam's worker pool, starting each worker as `python -m fleetstream.runtime.sdk_worker`."""

    def StartWorker(self, start_worker_request: beam_fn_api_pb2.StartWorkerRequest,
                    unused_context) -> beam_fn_api_pb2.StartWorkerResponse:
        try:
            command = [sys.executable, "-m", "fleetstream.runtime.sdk_worker",
                       start_worker_request.control_endpoint.url,
                       start_worker_request.worker_id, str(self._state_cache_size),
                       str(self._data_buffer_time_limit_ms)]
            logging.info("starting worker: %s", " ".join(command))
            self._worker_processes[start_worker_request.worker_id] = subprocess.Popen(
                command, stdout=subprocess.PIPE, close_fds=True)
            return beam_fn_api_pb2.StartWorkerResponse()
        except Exception:  # noqa: BLE001 - reported to the runner, as Beam's pool does
            return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service_port", type=int, required=True,
                        help="port of the worker pool service")
    parser.add_argument("--state_cache_mb", type=int, default=DEFAULT_STATE_CACHE_MB,
                        help="state cache per worker, MB (default %(default)s)")
    args = parser.parse_args(argv)
    address, server = WorkerPoolServicer.start(
        use_process=True, port=args.service_port, state_cache_size=args.state_cache_mb << 20)
    logging.getLogger().setLevel(logging.INFO)
    logging.info("worker pool on %s, state cache %d MB per worker", address, args.state_cache_mb)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
