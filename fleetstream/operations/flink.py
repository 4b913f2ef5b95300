"""The state of the jobs on a Flink cluster, from its REST API (`GET /jobs/overview`).

    for job in FlinkClient("http://127.0.0.1:8081").jobs():
        print(job.name, job.state, job.running_for_s)

`AsyncFlinkClient` does the same for the dashboard's event loop.

Jobs come live ones first (RUNNING, RESTARTING, ...), then the ended ones Flink still lists
(FINISHED, CANCELED, FAILED), newest first. A cluster that does not answer raises
`Unreachable` ("Flink at URL is unreachable: ...").
"""
from __future__ import annotations

from dataclasses import dataclass

import httpx

from fleetstream.operations.prometheus import DEFAULT_TIMEOUT_S, Unreachable, _reason

DEFAULT_FLINK = "http://127.0.0.1:8081"
#: states of a job that has not ended
LIVE_STATES = frozenset({"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING",
                         "CANCELLING", "RECONCILING", "SUSPENDED"})
#: states an operator should look at: the job is not doing its work
TROUBLE_STATES = frozenset({"RESTARTING", "FAILING", "FAILED", "SUSPENDED"})


@dataclass(frozen=True)
class FlinkJob:
    id: str
    name: str
    state: str
    #: unix ms
    start_time_ms: int
    #: ms the job has run (to now while it runs)
    duration_ms: int

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def running_for_s(self) -> float:
        return self.duration_ms / 1000.0


class FlinkClient:
    """Reads one Flink cluster's REST API (`url` like http://127.0.0.1:8081)."""

    what = "Flink"

    def __init__(self, url: str = DEFAULT_FLINK, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def jobs(self) -> list[FlinkJob]:
        """Every job the cluster lists: live ones first, then newest first."""
        try:
            response = self._client.get(f"{self.url}/jobs/overview")
        except httpx.HTTPError as error:
            raise Unreachable(self.what, self.url, _reason(error)) from None
        return parse_jobs(self.url, response)


class AsyncFlinkClient:
    """The same for an event loop; `await close()` when done."""

    what = "Flink"

    def __init__(self, url: str = DEFAULT_FLINK, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def close(self) -> None:
        await self._client.aclose()

    async def jobs(self) -> list[FlinkJob]:
        try:
            response = await self._client.get(f"{self.url}/jobs/overview")
        except httpx.HTTPError as error:
            raise Unreachable(self.what, self.url, _reason(error)) from None
        return parse_jobs(self.url, response)


def parse_jobs(url: str, response: httpx.Response) -> list[FlinkJob]:
    """The jobs of a `/jobs/overview` answer, live ones first, then newest first;
    Unreachable for anything but a Flink answer."""
    if response.status_code != 200:
        raise Unreachable("Flink", url, f"HTTP {response.status_code}, not a Flink REST answer")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("jobs"), list):
        raise Unreachable("Flink", url, "not a Flink REST answer")
    jobs = [FlinkJob(id=item.get("jid", "?"), name=item.get("name", ""),
                     state=item.get("state", "?"),
                     start_time_ms=int(item.get("start-time", 0) or 0),
                     duration_ms=int(item.get("duration", 0) or 0))
            for item in body["jobs"]]
    return sorted(jobs, key=lambda job: (not job.live, -job.start_time_ms))
