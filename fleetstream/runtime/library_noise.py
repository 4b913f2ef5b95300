"""Keep library chatter that is not the user's business off a command's output.

A first `fleetstream run` printed 44 lines, 25 of them noise:

- Google's client libraries (imported by Beam's GCP extra) warn with a FutureWarning about
  Python and grpcio versions they will stop supporting, once in the command's process and
  once in each of the DirectRunner's worker processes;
- Beam's local job service relays its SDK workers' own log lines at WARNING ("No
  semi_persistent_directory found", "Discarding unparseable args"), which describe the
  runner's set-up, not the user's data.

`quiet_library_noise()` silences exactly those, for the command and the worker processes
it starts (through PYTHONWARNINGS, unless the user set it); errors, the workers' errors
among them, stay loud, and `--verbose` shows everything.

Gap it fills: google-api-core's end-of-life FutureWarnings and Beam's relay of worker
WARNING lines (apache_beam.runners.portability.local_job_service). TODO: drop the
FutureWarning filter once the pinned Beam (docs/runtime.md) takes google libraries that
support this Python and grpcio.
"""
from __future__ import annotations

import logging
import os
import warnings

#: the logger through which Beam's local job service relays its workers' log lines
WORKER_RELAY_LOGGER = "apache_beam.runners.portability.local_job_service"


def quiet_library_noise() -> None:
    """Silence library FutureWarnings and relayed worker warnings (not errors)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    logging.getLogger(WORKER_RELAY_LOGGER).setLevel(logging.ERROR)
