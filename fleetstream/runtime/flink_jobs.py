"""Flink's REST API for the streaming job's life cycle: list, stop with a savepoint, cancel;
and the JVM metrics of the cluster's processes (metaspace, loaded classes).

    job = running_jobs()[0]
    savepoint = stop_with_savepoint(job, "/var/fleetstream/savepoints")
    # later: fleetstream stream --savepoint <savepoint>

Stopping with a savepoint drains nothing and loses nothing: Kafka read
positions, per-vehicle order buffers, activations and unsent batches are in
the savepoint, and the job restored from it goes on where it stopped.

Gap it fills: Beam's PortableRunner result can cancel a job but not stop it with a
savepoint, nor list the jobs of a Flink cluster; Flink's REST API does both. No
upstream issue is cited. TODO: remove once the job is stopped and listed through the
deployment's own tooling (e.g. the Flink Kubernetes operator, docs/runtime.md) or Beam's
job service grows a stop-with-savepoint.
"""
from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

DEFAULT_REST = "http://127.0.0.1:8081"
LIVE_STATES = ("CREATED", "RUNNING", "RESTARTING", "INITIALIZING")
ENDED_STATES = ("CANCELED", "FINISHED", "FAILED")


def _call(rest: str, path: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{rest}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def running_jobs(rest: str = DEFAULT_REST) -> list[str]:
    """Ids of the jobs that are not finished."""
    return [job["id"] for job in _call(rest, "/jobs")["jobs"] if job["status"] in LIVE_STATES]


def job_state(job_id: str, rest: str = DEFAULT_REST) -> str:
    return _call(rest, f"/jobs/{job_id}")["state"]


def job_summary(job_id: str, rest: str = DEFAULT_REST) -> str:
    """One line for an error message: the job's state, restarts and latest failure."""
    state = job_state(job_id, rest)
    restarts = {m["id"]: m["value"] for m in
                _call(rest, f"/jobs/{job_id}/metrics?get=numRestarts")}.get("numRestarts", "?")
    entries = _call(rest, f"/jobs/{job_id}/exceptions").get("exceptionHistory", {}).get(
        "entries", [])
    failure = (f"{entries[0]['exceptionName']} in {entries[0].get('taskName')}" if entries
               else "none")
    return f"job {job_id} {state}, {restarts} restarts, latest failure: {failure}"


def completed_checkpoints(job_id: str, rest: str = DEFAULT_REST) -> list[dict[str, Any]]:
    """The job's recent completed checkpoints as Flink reports them (`trigger_timestamp`,
    `latest_ack_timestamp`, `state_size`, ...), oldest first; Flink keeps the last
    `web.checkpoints.history` (10 by default)."""
    history = _call(rest, f"/jobs/{job_id}/checkpoints").get("history", [])
    return sorted((c for c in history if c["status"] == "COMPLETED"), key=lambda c: c["id"])


def stop_with_savepoint(job_id: str, target_directory: str, rest: str = DEFAULT_REST,
                        timeout_s: float = 120.0) -> str:
    """Take a savepoint and cancel the job; the savepoint's path."""
    trigger = _call(rest, f"/jobs/{job_id}/savepoints", "POST",
                    {"target-directory": target_directory, "cancel-job": True})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _call(rest, f"/jobs/{job_id}/savepoints/{trigger['request-id']}")
        if status["status"]["id"] == "COMPLETED":
            operation = status["operation"]
            if "failure-cause" in operation:
                raise RuntimeError(f"savepoint of job {job_id} failed: "
                                   f"{operation['failure-cause'].get('stack-trace', '')[:2000]}")
            return operation["location"]
        time.sleep(0.5)
    raise TimeoutError(f"savepoint of job {job_id} not done within {timeout_s:.0f} s")


def cancel(job_id: str, rest: str = DEFAULT_REST) -> None:
    """Cancel a job without a savepoint."""
    _call(rest, f"/jobs/{job_id}?mode=cancel", "PATCH")


def cancel_and_wait(job_id: str, rest: str = DEFAULT_REST, timeout_s: float = 120.0) -> None:
    """Cancel a job and return once Flink reports it ended (its tasks are gone)."""
    cancel(job_id, rest)
    deadline = time.monotonic() + timeout_s
    while (state := job_state(job_id, rest)) not in ENDED_STATES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {state} {timeout_s:.0f} s after cancel")
        time.sleep(0.5)


#: JVM metrics of a Flink process: metaspace in use (bytes), classes loaded and unloaded
#: since the JVM started, live threads
JVM_METRICS = ("Status.JVM.Memory.Metaspace.Used", "Status.JVM.ClassLoader.ClassesLoaded",
               "Status.JVM.ClassLoader.ClassesUnloaded", "Status.JVM.Threads.Count")


def taskmanagers(rest: str = DEFAULT_REST) -> list[str]:
    """The ids of the cluster's TaskManagers (`<host>:<rpc port>-<suffix>`)."""
    return [tm["id"] for tm in _call(rest, "/taskmanagers")["taskmanagers"]]


def jvm_metrics(rest: str = DEFAULT_REST, taskmanager: str | None = None) -> dict[str, float]:
    """`JVM_METRICS` of a TaskManager (by id), or of the JobManager when `taskmanager` is
    None: {name: value}."""
    where = f"/taskmanagers/{taskmanager}" if taskmanager else "/jobmanager"
    reply = _call(rest, f"{where}/metrics?get={','.join(JVM_METRICS)}")
    return {metric["id"]: float(metric["value"]) for metric in reply}


def wait_running(rest: str = DEFAULT_REST, timeout_s: float = 180.0,
                 known: tuple[str, ...] = ()) -> str:
    """Wait for a job (not in `known`) whose tasks all run; its id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for job_id in running_jobs(rest):
            if job_id in known:
                continue
            vertices = _call(rest, f"/jobs/{job_id}")["vertices"]
            if vertices and all(v["status"] == "RUNNING" for v in vertices):
                return job_id
        time.sleep(1)
    raise TimeoutError(f"no job running on {rest} within {timeout_s:.0f} s")
