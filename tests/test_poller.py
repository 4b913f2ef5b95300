"""The REST poller against real Kafka and the simulator's OEM API (in-process): only
approved vehicles are called, only changes are written, revocations stop calls, limits
and Retry-After hold, and a restart neither bursts nor re-writes."""
from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import orjson
import pytest

from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.poller import poll_settings, run_poller
from fleetstream.ingest.writer import RawWriter
from fleetstream.io.kafka.activations import publish_activations
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.topic_reader import read_records
from fleetstream.schemas.activations import ActivationEvent
from fleetstream.settings.ingest import IngestSettings, parse_ingest_settings
from fleetstream.simulator.oem_api import OemApi
from tests.helpers import free_port

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

APP = "fleet-a"


class Case:
    """One test's topics, API and poller settings."""

    def __init__(self, bootstrap: str, api: OemApi, **poll: object) -> None:
        self.bootstrap = bootstrap
        self.api = api
        self.port = free_port()
        tag = uuid.uuid4().hex[:8]
        self.raw, self.activations, self.state = (f"raw.poll-{tag}", f"activations-{tag}",
                                                  f"poll-state-{tag}")
        create_topics(bootstrap, [Topic(self.raw, 2),
                                  Topic(self.activations, 1, {"cleanup.policy": "compact"})])
        self.settings: IngestSettings = parse_ingest_settings({
            "kafka": {"bootstrap": bootstrap},
            "sources": {"mercedes": {"topic": self.raw, "poll": {
                "url": f"http://127.0.0.1:{self.port}/vehicles/{{vin}}",
                "activations_topic": self.activations, "state_topic": self.state,
                **poll}}}})

    def activate(self, status: str, *vins: str, app: str = APP) -> None:
        now_ms = int(time.time() * 1000)
        publish_activations(self.bootstrap, self.activations,
                            [ActivationEvent(vin, app, status, now_ms) for vin in vins])

    async def activate_async(self, status: str, *vins: str, app: str = APP) -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.activate(status, *vins, app=app))

    def records(self) -> list[tuple[str, bytes, int]]:
        return [(r.key().decode(), r.value(), r.timestamp()[1])
                for r in read_records(self.bootstrap, self.raw)]

    @asynccontextmanager
    async def polling(self, metrics: IngestMetrics | None = None
                      ) -> AsyncIterator[IngestMetrics]:
        """The API served and the poller running, both stopped on exit."""
        metrics = metrics or IngestMetrics()
        writer = RawWriter(self.bootstrap)
        stop = asyncio.Event()
        await self.api.start(self.port)
        task = asyncio.create_task(run_poller(self.settings, poll_settings(self.settings),
                                              writer, metrics, stop))
        try:
            yield metrics
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            writer.close()
            await self.api.stop()


def _calls_since(api: OemApi, since: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for at, vin, _ in api.calls_log:
        if at >= since:
            counts[vin] = counts.get(vin, 0) + 1
    return counts


def _metric(metrics: IngestMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("etag", [True, False], ids=["etag", "hash"])
def test_only_approved_vehicles_are_called_and_only_changes_are_written(
        kafka_service, etag: bool) -> None:
    api = OemApi(6, update_every_s=3600, etag=etag)
    v = api.vins
    case = Case(kafka_service.bootstrap, api, interval_s=0.5, rate_per_s=50)
    case.activate("approved", v[0], v[3], v[5])
    case.activate("pending", v[1])
    case.activate("rejected", v[2])
    case.activate("revoked", v[3])                       # approved, then revoked
    case.activate("approved", v[5], app="other-app")
    case.activate("revoked", v[5])                       # still approved for other-app
    # v[4]: never activated

    async def main() -> IngestMetrics:
        async with case.polling() as metrics:
            await asyncio.sleep(3)
            api.touch(v[0])
            await asyncio.sleep(2)
        return metrics

    metrics = asyncio.run(main())
    assert set(api.calls) == {v[0], v[5]}, api.stats()
    assert api.calls[v[0]] >= 5 and api.calls[v[5]] >= 5
    records = case.records()
    by_vin = {vin: [value for key, value, _ in records if key == vin] for vin in (v[0], v[5])}
    assert len(by_vin[v[5]]) == 1, "unchanged data was written again"
    assert len(by_vin[v[0]]) == 2                          # the first state and the touched one
    assert by_vin[v[0]][1] == api.body(v[0])               # the body untouched
    assert orjson.loads(by_vin[v[5]][0])["vin"] == v[5]
    assert len(records) == 3
    now_ms = time.time() * 1000
    assert all(now_ms - 10_000 < timestamp <= now_ms for _, _, timestamp in records)
    calls = sum(api.calls.values())
    outcomes = {o: _metric(metrics, "fleetstream_ingest_poll_calls_total", source="mercedes",
                           outcome=o) for o in ("ok", "not_modified", "rate_limited", "error")}
    assert sum(outcomes.values()) == calls
    assert outcomes["not_modified" if etag else "ok"] >= calls - 3
    assert _metric(metrics, "fleetstream_ingest_poll_changes_total", source="mercedes") == 3
    assert _metric(metrics, "fleetstream_ingest_records_total", source="mercedes",
                   via="poll") == 3


def test_a_revocation_stops_calls_within_ten_seconds_and_an_approval_starts_them(
        kafka_service) -> None:
    api = OemApi(3, update_every_s=3600)
    v = api.vins
    case = Case(kafka_service.bootstrap, api, interval_s=0.5, rate_per_s=50)
    case.activate("approved", v[0])

    async def main() -> tuple[float, float]:
        async with case.polling():
            await asyncio.sleep(2)
            assert api.calls[v[0]] >= 2 and not api.calls[v[1]]
            revoked_at = time.monotonic()
            await case.activate_async("revoked", v[0])
            await case.activate_async("approved", v[1])
            approved_at = time.monotonic()
            await asyncio.sleep(4)
        return revoked_at, approved_at

    revoked_at, approved_at = asyncio.run(main())
    last_call = max(at for at, vin, _ in api.calls_log if vin == v[0])
    assert last_call - revoked_at < 2.0, "a revoked vehicle was still called"
    first_call = min(at for at, vin, _ in api.calls_log if vin == v[1])
    assert first_call - approved_at < 2.0
    assert _calls_since(api, approved_at + 1).get(v[1], 0) >= 3
    assert v[2] not in api.calls


def test_retry_after_is_honoured_and_concurrency_stays_within_the_limit(
        kafka_service) -> None:
    api = OemApi(12, update_every_s=3600, rate_limit=6, retry_after_s=2, latency_s=0.2)
    case = Case(kafka_service.bootstrap, api, interval_s=1, concurrency=3, rate_per_s=100)
    case.activate("approved", *api.vins)

    async def main() -> None:
        async with case.polling():
            await asyncio.sleep(7)

    asyncio.run(main())
    stats = api.stats()
    assert stats["statuses"].get("429", 0) >= 1, stats
    assert stats["early_calls"] == 0, stats
    assert 1 < stats["max_in_flight"] <= 3, stats
    assert len(case.records()) == 12 and set(api.calls) == set(api.vins)


def test_server_errors_are_backed_off(kafka_service) -> None:
    api = OemApi(2, update_every_s=3600, error_rate=1.0)
    case = Case(kafka_service.bootstrap, api, interval_s=0.5, rate_per_s=50, max_backoff_s=4)
    case.activate("approved", *api.vins)

    async def main() -> IngestMetrics:
        async with case.polling() as metrics:
            await asyncio.sleep(8)
        return metrics

    metrics = asyncio.run(main())
    for vin in api.vins:
        times = [at for at, called, _ in api.calls_log if called == vin]
        assert 2 <= len(times) <= 8, (vin, len(times))      # 16 without backing off
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert gaps[-1] > 1.0, gaps                         # the interval was 0.5 s
    assert _metric(metrics, "fleetstream_ingest_poll_calls_total", source="mercedes",
                   outcome="error") == sum(api.calls.values())
    assert case.records() == []


def test_a_restart_neither_bursts_nor_writes_unchanged_vehicles_again(kafka_service) -> None:
    vehicles, interval = 20, 4.0
    api = OemApi(vehicles, update_every_s=3600)
    case = Case(kafka_service.bootstrap, api, interval_s=interval, rate_per_s=100)
    case.activate("approved", *api.vins)

    async def main() -> tuple[float, float]:
        async with case.polling():
            await asyncio.sleep(interval + 1.5)
        restarted_at = time.monotonic()
        async with case.polling():
            await asyncio.sleep(interval + 1.5)
        return restarted_at

    restarted_at = asyncio.run(main())
    assert set(api.calls) == set(api.vins)
    first_seconds = sum(_calls_since(api, restarted_at).values()) - sum(
        _calls_since(api, restarted_at + 2).values())
    assert first_seconds <= vehicles * 2 / interval + 3, first_seconds   # the schedule's share
    for vin in api.vins:
        before = [at for at, called, _ in api.calls_log if called == vin and at < restarted_at]
        after = [at for at, called, _ in api.calls_log if called == vin and at >= restarted_at]
        assert after, vin
        assert after[0] >= before[-1] + interval - 0.3, (vin, after[0] - before[-1])
    keys = [key for key, _, _ in case.records()]
    assert sorted(keys) == sorted(api.vins), "a vehicle's unchanged state was written again"
