"""Deliver: batching by each knob, timer flush without new data, retries and delivery dead letters."""
from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream

from fleetstream.io.sinks import registry
from fleetstream.io.sinks.base import Sink
from fleetstream.io.sinks.registry import application_sink
from fleetstream.schemas.delivery import Batch, Batching, Record
from fleetstream.schemas.errors import PermanentWriteError
from fleetstream.settings.config import parse_config
from fleetstream.transforms import deliver_bounded
from fleetstream.transforms.deliver import Deliver
from fleetstream.transforms.delivery_batches import batch_id
from fleetstream.transforms.delivery_retry import RetryPolicy

WRITTEN: list[Batch] = []
ATTEMPTS: list[str] = []
DEAD: list[dict] = []


class MemorySink(Sink):
    """Keeps batches in WRITTEN; fails its first `fail_first` writes (or always: -1)."""

    TYPE = "memory"
    DEFAULT_BATCHING = Batching(max_records=1000, max_bytes=1 << 20, max_delay_s=60)
    OPTIONAL = frozenset({"fail_first", "permanent"})

    def write(self, batch: Batch) -> None:
        ATTEMPTS.append(batch.batch_id)
        failures = self.options.get("fail_first", 0)
        if failures < 0 or ATTEMPTS.count(batch.batch_id) <= failures:
            if self.options.get("permanent"):
                raise PermanentWriteError("record too large")
            raise ConnectionError("sink is down")
        WRITTEN.append(batch)


@pytest.fixture(autouse=True)
def memory_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.SINKS, "memory", MemorySink)  # type: ignore[index]
    WRITTEN.clear()
    ATTEMPTS.clear()
    DEAD.clear()


def applications(**sink: Any) -> tuple:
    return parse_config({"applications": [
        {"id": "app", "permissions": ["diagnostics.*"], "sink": {"type": "memory", **sink}}]}
    ).applications


def record(i: int, vin: str = "V") -> tuple[str, Record]:
    return "app", Record(vin, f"m{i:03d}", 1_000 + i, orjson.dumps({"i": i}))


FAST_RETRY = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.02, max_elapsed_s=0.5)


def _keep_dead(letter: dict) -> None:
    DEAD.append(letter)  # a module function: the in-process runner sees this very list


def run_batch(apps: tuple, n: int, retry: RetryPolicy | None = FAST_RETRY) -> list[dict]:
    """Deliver n records as a batch job; the delivery dead letters."""
    with TestPipeline() as pipeline:
        _ = (pipeline | beam.Create([record(i) for i in range(n)]) | Deliver(apps, application_sink, retry)
             | beam.Map(_keep_dead))
    return DEAD


def sizes() -> list[int]:
    return sorted((len(b.records) for b in WRITTEN), reverse=True)


def test_flush_by_max_records_keeps_every_record_once_in_order() -> None:
    run_batch(applications(max_records=3), 10)
    assert sizes() == [3, 3, 3, 1]
    ids = [r.message_id for b in WRITTEN for r in b.records]
    assert sorted(ids) == [f"m{i:03d}" for i in range(10)]
    for b in WRITTEN:
        assert [r.message_id for r in b.records] == sorted(r.message_id for r in b.records)
        assert b.batch_id == batch_id(b.records)


def test_flush_by_max_bytes() -> None:
    one = len(orjson.dumps({"i": 0})) + 1   # every document here has this size, with its newline
    run_batch(applications(max_bytes=2 * one), 6)
    assert sizes() == [2, 2, 2]


def test_end_of_input_flushes_a_partial_batch() -> None:
    run_batch(applications(max_records=100), 7)
    assert sizes() == [7]


def _timer_stream(advance_s: float) -> None:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = (TestStream()
              .add_elements([record(i) for i in range(3)])
              .advance_processing_time(advance_s)
              .add_elements([record(i) for i in range(3, 5)])
              .advance_watermark_to_infinity())
    # The TestStream's processing-time clock starts at 0: give Deliver the same origin.
    with TestPipeline(options=options) as pipeline:
        _ = pipeline | stream | Deliver(applications(max_records=100, max_delay=10), application_sink,
                                        FAST_RETRY, clock=lambda: 0.0)


def test_streaming_count_flush_joins_the_batch_in_state_with_the_new_records() -> None:
    """Lists (the streaming job's `batches=True`): the first list waits in state, the
    second fills the batch to max_records, the rest leaves at the end; in order, once."""
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = (TestStream()
              .add_elements([[record(0), record(1)]])
              .advance_processing_time(1)
              .add_elements([[record(2), record(3), record(4)]])
              .advance_watermark_to_infinity())
    with TestPipeline(options=options) as pipeline:
        _ = pipeline | stream | Deliver(applications(max_records=4, max_delay=10), application_sink, FAST_RETRY,
                                        clock=lambda: 0.0, batches=True)
    assert [[r.message_id for r in b.records] for b in WRITTEN] == [
        ["m000", "m001", "m002", "m003"], ["m004"]]


def test_max_delay_flushes_on_a_timer_without_new_data() -> None:
    _timer_stream(advance_s=11)
    assert [len(b.records) for b in WRITTEN] == [3, 2]


def test_no_timer_flush_before_max_delay() -> None:
    _timer_stream(advance_s=5)
    assert [len(b.records) for b in WRITTEN] == [5]


def test_failed_writes_are_retried_until_they_succeed() -> None:
    dead = run_batch(applications(fail_first=2), 4)
    assert dead == []
    assert sizes() == [4]
    assert len(ATTEMPTS) == 3


def test_past_the_retry_cap_the_batch_is_a_dead_letter_with_documents_whole() -> None:
    dead = run_batch(applications(fail_first=-1), 3)
    assert WRITTEN == []
    assert len(ATTEMPTS) > 1
    [letter] = dead
    assert letter["stage"] == "deliver" and letter["application_id"] == "app"
    assert "sink is down" in letter["errors"][0]["reason"]
    assert letter["documents"] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_permanent_errors_are_not_retried() -> None:
    dead = run_batch(applications(fail_first=-1, permanent=True), 2)
    assert len(ATTEMPTS) == 1
    assert "record too large" in dead[0]["errors"][0]["reason"]


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_s=1, max_backoff_s=8, max_elapsed_s=60)
    waits = [policy.backoff_s(n) for n in range(1, 7)]
    assert all(0.5 * min(8, 2 ** (n - 1)) <= w <= min(8, 2 ** (n - 1))
               for n, w in enumerate(waits, 1))


def test_shards_split_an_application_by_vehicle_keeping_each_vehicles_order() -> None:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    vins = [f"V{n}" for n in range(8)]
    stream = (TestStream()
              .add_elements([record(i, vins[i % 8]) for i in range(40)])
              .advance_watermark_to_infinity())
    with TestPipeline(options=options) as pipeline:
        _ = pipeline | stream | Deliver(applications(max_records=100, max_delay=10), application_sink,
                                        FAST_RETRY, clock=lambda: 0.0, shards=4)
    assert 1 < len(WRITTEN) <= 4                      # one batch per shard that had data
    ids = [r.message_id for b in WRITTEN for r in b.records]
    assert sorted(ids) == [f"m{i:03d}" for i in range(40)]       # each once
    shard_of = {}
    for number, b in enumerate(WRITTEN):
        for vin in {r.vin for r in b.records}:
            assert shard_of.setdefault(vin, number) == number     # a vehicle in one shard
        for vin in vins:
            mine = [r.message_id for r in b.records if r.vin == vin]
            assert mine == sorted(mine)                           # in its order
    with pytest.raises(ValueError, match="shards"):
        Deliver(applications(), application_sink, shards=0)


class ScheduledSink(MemorySink):
    """A MemorySink with its own retry schedule, failing with a Retry-After."""

    TYPE = "scheduled"
    OPTIONAL = frozenset({"retry_after"})
    RETRY = RetryPolicy(schedule=(0.01, 0.01, 0.01), jitter=0.0)

    def write(self, batch: Batch) -> None:
        ATTEMPTS.append(batch.batch_id)
        error = ConnectionError("busy")
        error.retry_after_s = self.options.get("retry_after", 0)  # type: ignore[attr-defined]
        raise error


def _scheduled_apps(**sink: Any) -> tuple:
    return parse_config({"applications": [
        {"id": "app", "permissions": ["diagnostics.*"], "sink": {"type": "scheduled", **sink}}]}
    ).applications


def test_a_sinks_own_schedule_applies_unless_deliver_is_given_one(monkeypatch) -> None:
    monkeypatch.setitem(registry.SINKS, "scheduled", ScheduledSink)  # type: ignore[index]
    dead = run_batch(_scheduled_apps(), 2, retry=None)
    assert len(ATTEMPTS) == 4                      # the first attempt and three retries
    assert "gave up after 4 attempts" in dead[0]["errors"][0]["reason"]
    ATTEMPTS.clear()
    run_batch(_scheduled_apps(), 2, retry=RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.01,
                                                      max_elapsed_s=0.2))
    assert len(ATTEMPTS) > 4                       # Deliver's own policy: no schedule


def test_a_batch_job_retries_one_batch_for_at_most_bounded_max_elapsed(monkeypatch) -> None:
    """A schedule over hours (the webhook's) does not keep a batch job sleeping: past
    BOUNDED_MAX_ELAPSED_S the batch is a dead letter."""
    monkeypatch.setitem(registry.SINKS, "scheduled", ScheduledSink)  # type: ignore[index]
    monkeypatch.setattr(deliver_bounded, "BOUNDED_MAX_ELAPSED_S", 0.5)
    started = time.monotonic()
    dead = run_batch(_scheduled_apps(), 2, retry=RetryPolicy(schedule=(0.01, 3600.0), jitter=0.0,
                                                             max_elapsed_s=1e9))
    assert time.monotonic() - started < 60
    assert len(ATTEMPTS) == 2
    assert "gave up after 2 attempts" in dead[0]["errors"][0]["reason"]


def test_a_retry_after_is_waited_at_least(monkeypatch) -> None:
    monkeypatch.setitem(registry.SINKS, "scheduled", ScheduledSink)  # type: ignore[index]
    started = time.monotonic()
    dead = run_batch(_scheduled_apps(retry_after=0.3), 1, retry=None)
    assert time.monotonic() - started >= 0.9       # three waits of 0.3 s, not 0.01 s
    assert len(dead) == 1
