"""A small client of Prometheus' HTTP API: instant and range queries, and the alerts.

    prometheus = PrometheusClient("http://127.0.0.1:9090")
    for sample in prometheus.query('sum by (topic) (fleetstream_consumer_lag_records)'):
        print(sample.labels["topic"], sample.value)
    series = prometheus.query_range(promql, start=now - 1800, end=now, step=15)
    firing = [a for a in prometheus.alerts() if a.state == "firing"]

`AsyncPrometheusClient` does the same for the dashboard's event loop. Every call has a
timeout; a Prometheus that does not answer (refused, timed out, not HTTP, a proxy's 5xx)
raises `Unreachable` with a message that names its URL, and a query Prometheus rejects
raises `QueryError` with Prometheus' own reason. Values are floats; Prometheus' "NaN" and
"+Inf" become float('nan') and float('inf').
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import httpx

#: seconds a call to Prometheus (or Flink) may take, connecting included
DEFAULT_TIMEOUT_S = 5.0


class Unreachable(RuntimeError):
    """A server (Prometheus, Flink) did not answer; the message names it and its URL."""

    def __init__(self, what: str, url: str, reason: str) -> None:
        super().__init__(f"{what} at {url} is unreachable: {reason}")
        self.what, self.url, self.reason = what, url, reason


class QueryError(RuntimeError):
    """Prometheus answered but refused the query (bad PromQL, timeout of the query)."""


@dataclass(frozen=True)
class Sample:
    """One series' value at one instant."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series' values over a range: (unix seconds, value) pairs, oldest first."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Alert:
    """An alert Prometheus' rules hold: `state` is "firing" or "pending"."""

    name: str
    state: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    active_at: str = ""
    value: str = ""

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def summary(self) -> str:
        return (self.annotations.get("summary") or self.annotations.get("description")
                or self.annotations.get("message") or "")


def number(text: Any) -> float:
    """A Prometheus sample value ("1.5", "NaN", "+Inf") as a float."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _reason(error: Exception) -> str:
    if isinstance(error, httpx.TimeoutException):
        return f"no answer within the timeout ({type(error).__name__})"
    if isinstance(error, httpx.ConnectError):
        return f"connection failed ({error or 'refused'})"
    return f"{type(error).__name__}: {error}"


def _data(what: str, url: str, response: httpx.Response) -> Any:
    """The `data` of an API answer; Unreachable for what is not Prometheus answering."""
    try:
        body = response.json()
    except ValueError:
        raise Unreachable(what, url, f"HTTP {response.status_code}, not a Prometheus API "
                                     f"answer") from None
    if not isinstance(body, dict) or "status" not in body:
        raise Unreachable(what, url, f"HTTP {response.status_code}, not a Prometheus API answer")
    if body["status"] != "success":
        raise QueryError(f"Prometheus refused the query: {body.get('errorType', '')}: "
                         f"{body.get('error', '')}")
    return body["data"]


def parse_vector(data: Mapping[str, Any]) -> list[Sample]:
    """Samples of an instant query's `data` (a vector, or a scalar as one unlabelled sample)."""
    if data["resultType"] == "scalar":
        return [Sample({}, number(data["result"][1]))]
    if data["resultType"] != "vector":
        raise QueryError(f"expected an instant vector, got a {data['resultType']}")
    return [Sample(dict(item["metric"]), number(item["value"][1])) for item in data["result"]]


def parse_matrix(data: Mapping[str, Any]) -> list[Series]:
    """Series of a range query's `data`."""
    if data["resultType"] != "matrix":
        raise QueryError(f"expected a range vector, got a {data['resultType']}")
    return [Series(dict(item["metric"]),
                   tuple((float(t), number(v)) for t, v in item["values"]))
            for item in data["result"]]


def parse_alerts(data: Mapping[str, Any]) -> list[Alert]:
    """Alerts of `/api/v1/alerts`' `data`, firing first, then by name."""
    alerts = [Alert(name=item["labels"].get("alertname", "?"), state=item.get("state", ""),
                    labels=dict(item["labels"]), annotations=dict(item.get("annotations", {})),
                    active_at=item.get("activeAt", ""), value=item.get("value", ""))
              for item in data.get("alerts", [])]
    return sorted(alerts, key=lambda a: (a.state != "firing", a.name, sorted(a.labels.items())))


def _range_params(promql: str, start: float, end: float, step: float) -> dict[str, str]:
    return {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}


class PrometheusClient:
    """Blocking calls to one Prometheus (`url` like http://127.0.0.1:9090), over one
    keep-alive connection."""

    what = "Prometheus"

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        try:
            response = self._client.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as error:
            raise Unreachable(self.what, self.url, _reason(error)) from None
        return _data(self.what, self.url, response)

    def query(self, promql: str) -> list[Sample]:
        """The instant query's samples now."""
        return parse_vector(self._get("/api/v1/query", {"query": promql}))

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        """The query evaluated every `step` seconds from `start` to `end` (unix seconds)."""
        return parse_matrix(self._get("/api/v1/query_range",
                                      _range_params(promql, start, end, step)))

    def alerts(self) -> list[Alert]:
        """The alerts the rules hold now (firing and pending)."""
        return parse_alerts(self._get("/api/v1/alerts"))


class AsyncPrometheusClient:
    """The same calls for an event loop; `await close()` when done."""

    what = "Prometheus"

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        try:
            response = await self._client.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as error:
            raise Unreachable(self.what, self.url, _reason(error)) from None
        return _data(self.what, self.url, response)

    async def query(self, promql: str) -> list[Sample]:
        return parse_vector(await self._get("/api/v1/query", {"query": promql}))

    async def query_range(self, promql: str, start: float, end: float,
                          step: float) -> list[Series]:
        return parse_matrix(await self._get("/api/v1/query_range",
                                            _range_params(promql, start, end, step)))

    async def alerts(self) -> list[Alert]:
        return parse_alerts(await self._get("/api/v1/alerts"))
