"""A failing sink holds only its own application's documents (issue #19).

Streaming Deliver on the DirectRunner with a TestStream: processing time is the
TestStream's clock, which Deliver's `clock` and the sinks here read too, so a sink can
fail for a stretch of (virtual) seconds. Each test checks what reached each sink and
when, and what went to the delivery dead letters; together they account for every
document. The retry rules themselves are checked without Beam at the end.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any, Iterator

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.direct.clock import TestClock
from apache_beam.testing.test_stream import TestStream

from fleetstream.io.sinks import registry
from fleetstream.io.sinks.base import Sink
from fleetstream.io.sinks.registry import application_sink
from fleetstream.schemas.delivery import Batch, Batching, Record
from fleetstream.schemas.errors import ConfigError, PermanentWriteError
from fleetstream.settings.config import parse_config
from fleetstream.transforms.deliver import Deliver
from fleetstream.transforms.delivery_batches import cut_batches
from fleetstream.transforms.delivery_retry import Circuit, RetryPolicy, next_attempt
from fleetstream.transforms import delivery_writes
from fleetstream.transforms.delivery_writes import Outcome, WorkerWrites

_CLOCKS: list[TestClock] = []
#: (application, test-clock time, batch) of every successful write; (application, time) of
#: every failed one
WRITTEN: list[tuple[str, float, Batch]] = []
FAILED: list[tuple[str, float]] = []
DEAD: list[dict] = []
VINS = ("V0", "V1", "V2", "V3")
#: set by a `releases_after` sink; a `hang` sink's first write waits for it (wall time)
RELEASED = threading.Event()
HANG_TIMED_OUT: list[bool] = []


def now() -> float:
    """The TestStream's processing time (0 before the pipeline starts)."""
    return _CLOCKS[-1].time() if _CLOCKS else 0.0


class _RecordedTestClock(TestClock):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _CLOCKS.append(self)


class OutageSink(Sink):
    """Fails from `down_from` until `down_until` (test-clock seconds), else keeps the batch."""

    TYPE = "outage"
    DEFAULT_BATCHING = Batching(max_records=1000, max_bytes=1 << 20, max_delay_s=1)
    OPTIONAL = frozenset({"down_from", "down_until", "retry_after", "permanent", "hang",
                          "releases_after"})

    def write(self, batch: Batch) -> None:
        if self.options.get("hang") and not HANG_TIMED_OUT:
            HANG_TIMED_OUT.append(not RELEASED.wait(30))
        at = now()
        if self.options.get("down_from", 1e18) <= at < self.options.get("down_until", 1e18):
            FAILED.append((batch.application_id, at))
            if self.options.get("permanent"):
                raise PermanentWriteError("document refused")
            error = ConnectionError("sink is down")
            error.retry_after_s = self.options.get("retry_after")  # type: ignore[attr-defined]
            raise error
        WRITTEN.append((batch.application_id, at, batch))
        if len(delivered(batch.application_id)) >= self.options.get("releases_after", 1e18):
            RELEASED.set()


@pytest.fixture(autouse=True)
def test_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.SINKS, "outage", OutageSink)  # type: ignore[index]
    monkeypatch.setattr(direct_runner, "TestClock", _RecordedTestClock)
    for kept in (_CLOCKS, WRITTEN, FAILED, DEAD, HANG_TIMED_OUT):
        kept.clear()
    RELEASED.clear()


def applications(**apps: dict) -> tuple:
    return parse_config({"applications": [
        {"id": app, "permissions": ["diagnostics.*"], "sink": {"type": "outage", **sink}}
        for app, sink in apps.items()]}).applications


def record(app: str, second: int, vin: str) -> tuple[str, Record]:
    index = f"{second:03d}-{vin}"
    return app, Record(vin, f"{app}-{index}", second * 1000,
                       orjson.dumps({"app": app, "i": index, "brand": "tesla"}), second * 1000)


def arrivals(apps: tuple[str, ...], seconds: int) -> Iterator[tuple[int, list[tuple[str, Record]]]]:
    """One document per vehicle and application every second."""
    for second in range(seconds):
        yield second, [record(app, second, vin) for app in apps for vin in VINS]


def _keep_dead(letter: dict) -> None:
    DEAD.append(letter)


def run(apps: tuple, seconds: int, retry: RetryPolicy | None, shards: int = 1,
        tail_s: int = 0) -> None:
    """Documents arrive for `seconds`, then processing time runs `tail_s` more without any.

    (The streaming DirectRunner did not report the counters counted in timer callbacks,
    where most writes happen here, so the counters are checked on the batch path.)"""
    stream = TestStream()
    for second, batch in arrivals(tuple(a.id for a in apps), seconds):
        stream = stream.add_elements(batch).advance_processing_time(1)
    for _ in range(tail_s):
        stream = stream.advance_processing_time(1)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline | stream | Deliver(apps, application_sink, retry, clock=now, shards=shards)
         | beam.Map(_keep_dead))
    result = pipeline.run()
    result.wait_until_finish()


def delivered(app: str) -> list[Record]:
    return [r for a, _, b in WRITTEN if a == app for r in b.records]


def dead_records(app: str) -> list[dict]:
    return [d for letter in DEAD if letter["application_id"] == app for d in letter["documents"]]


def assert_vehicle_order(records: list[Record]) -> None:
    """Per vehicle, each document's first copy comes in order (a copy again only after it)."""
    seen: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.message_id not in seen[r.vin]:
            seen[r.vin].append(r.message_id)
    for ids in seen.values():
        assert ids == sorted(ids)


def latencies(app: str) -> list[float]:
    return [at - r.received_ms / 1000 for a, at, b in WRITTEN if a == app for r in b.records]


SLOW_RETRY = RetryPolicy(initial_backoff_s=1, max_backoff_s=8, max_elapsed_s=600)


def test_a_sink_outage_holds_only_its_own_application_and_loses_nothing() -> None:
    """`broken`'s sink fails from 5 s to 35 s; `healthy` keeps its 1 s batching all along;
    after the outage every `broken` document arrives once, each vehicle in order."""
    apps = applications(broken={"down_from": 5, "down_until": 35, "max_delay": 1},
                        healthy={"max_delay": 1})
    run(apps, seconds=50, retry=SLOW_RETRY, shards=2, tail_s=10)
    everything = {r.message_id for _, batch in arrivals(("broken", "healthy"), 50) for _, r in batch}
    assert DEAD == []
    for app in ("broken", "healthy"):
        ids = [r.message_id for r in delivered(app)]
        assert sorted(ids) == sorted(i for i in everything if i.startswith(app + "-"))
        assert len(ids) == len(set(ids))                 # a memory sink has no partial writes
        assert_vehicle_order(delivered(app))
    assert max(latencies("healthy")) <= 2.0             # max_delay + one arrival step
    during = [at for a, at, _ in WRITTEN if a == "healthy" and 5 <= at < 35]
    assert len(during) >= 25                             # one batch a second, or so, in the outage
    assert not [at for a, at, _ in WRITTEN if a == "broken" and 5 <= at < 35]
    held = [at - r.received_ms / 1000 for a, at, b in WRITTEN if a == "broken" for r in b.records
            if 5 <= r.received_ms / 1000 < 35]
    assert min(held) > 0 and max(held) <= 30 + 8 + 2     # the outage, one backoff, a step
    # the circuit: two shards fail once per backoff between them, not once per batch each
    failures = [at for a, at in FAILED if a == "broken"]
    assert 3 <= len(failures) <= 14


def test_a_write_that_hangs_holds_only_its_own_application() -> None:
    """`slow`'s first write hangs (wall time) until `healthy` has written 30 s of its
    documents: the step goes on without waiting for it, and once it returns every `slow`
    document follows, each vehicle in order. (Had the step waited in the write, `healthy`
    could not have written and the hang would have ended by its 30 s timeout.)"""
    apps = applications(slow={"hang": True, "max_delay": 1},
                        healthy={"max_delay": 1, "releases_after": 30 * len(VINS)})
    run(apps, seconds=40, retry=SLOW_RETRY, tail_s=5)
    assert HANG_TIMED_OUT == [False]
    everything = {r.message_id for _, batch in arrivals(("slow", "healthy"), 40) for _, r in batch}
    assert DEAD == []
    for app in ("slow", "healthy"):
        ids = [r.message_id for r in delivered(app)]
        assert sorted(ids) == sorted(i for i in everything if i.startswith(app + "-"))
        assert len(ids) == len(set(ids))
        assert_vehicle_order(delivered(app))
    assert max(latencies("healthy")) <= 2.0


def test_past_the_policy_batches_are_dead_letters_with_the_reason_and_documents_whole() -> None:
    """A sink that never comes back: each held batch gives up after `max_elapsed_s`; the
    documents still waiting at the end of input are tried once and dead-lettered too."""
    policy = RetryPolicy(initial_backoff_s=1, max_backoff_s=2, max_elapsed_s=6, jitter=0)
    apps = applications(broken={"down_from": 0, "down_until": 1e9, "max_delay": 1})
    run(apps, seconds=20, retry=policy)
    assert WRITTEN == []
    reasons = [letter["errors"][0]["reason"] for letter in DEAD]
    gave_up = [r for r in reasons if r.startswith("gave up after")]
    assert gave_up and all("sink is down" in r for r in reasons)
    assert any("gave up after 4 attempts" in r for r in gave_up)    # 1 + 1 + 2 + 2 s > 6 s
    assert any(r.startswith("the window ended") for r in reasons)
    ids = [d["i"] for d in dead_records("broken")]
    assert sorted(ids) == sorted(r.document and orjson.loads(r.document)["i"]
                                 for _, batch in arrivals(("broken",), 20) for _, r in batch)
    assert all(letter["stage"] == "deliver" and letter["batch_id"] for letter in DEAD)


def test_a_retry_after_is_waited_at_least() -> None:
    apps = applications(slow={"down_from": 2, "down_until": 3, "retry_after": 20, "max_delay": 1})
    run(apps, seconds=5, retry=RetryPolicy(initial_backoff_s=0.5, max_backoff_s=0.5), tail_s=30)
    assert DEAD == []
    [(_, failed_at)] = FAILED
    first_after = min(at for _, at, _ in WRITTEN if at > failed_at)
    assert first_after >= failed_at + 20
    assert sorted(r.message_id for r in delivered("slow")) == sorted(
        r.message_id for _, batch in arrivals(("slow",), 5) for _, r in batch)


def test_a_permanent_error_is_dead_lettered_at_once_and_holds_nothing() -> None:
    apps = applications(refused={"down_from": 3, "down_until": 4, "permanent": True,
                                 "max_delay": 1})
    run(apps, seconds=8, retry=SLOW_RETRY)
    [letter] = DEAD
    assert letter["errors"][0]["reason"] == "PermanentWriteError: document refused"
    assert len(FAILED) == 1
    written = [at for _, at, _ in WRITTEN]
    assert [at for at in written if at > 3] and max(written) <= 9   # the next batches went on
    ids = sorted([r.message_id for r in delivered("refused")]
                 + [f"refused-{d['i']}" for d in letter["documents"]])
    assert ids == sorted(r.message_id for _, batch in arrivals(("refused",), 8) for _, r in batch)


def test_past_max_buffer_new_documents_are_dead_lettered_and_the_rest_delivered() -> None:
    one = len(record("small", 0, "V0")[1].document) + 1
    apps = applications(small={"down_from": 2, "down_until": 12, "max_delay": 1,
                               "max_buffer": 20 * one})
    run(apps, seconds=20, retry=SLOW_RETRY, tail_s=10)
    full = [letter for letter in DEAD if letter["errors"][0]["reason"].startswith("buffer full")]
    assert full and len(full) == len(DEAD)
    assert "max_buffer" in full[0]["errors"][0]["reason"]
    assert "sink is down" in full[0]["errors"][0]["reason"]
    dead_ids = [f"small-{d['i']}" for d in dead_records("small")]
    kept = [r.message_id for r in delivered("small")]
    assert sorted(kept + dead_ids) == sorted(
        r.message_id for _, batch in arrivals(("small",), 20) for _, r in batch)
    assert len(dead_ids) >= 8 * len(VINS) - 20          # the outage's documents past 20 waited
    assert_vehicle_order(delivered("small"))


# --- the rules, without Beam ------------------------------------------------------------

def test_next_attempt_takes_the_longer_of_backoff_and_retry_after_and_gives_up() -> None:
    policy = RetryPolicy(initial_backoff_s=1, max_backoff_s=4, max_elapsed_s=30, jitter=0)
    busy = ConnectionError("busy")
    assert next_attempt(policy, 1, 100, 100, busy) == 101
    assert next_attempt(policy, 5, 100, 110, busy) == 114              # capped at 4 s
    busy.retry_after_s = 9  # type: ignore[attr-defined]
    assert next_attempt(policy, 1, 100, 100, busy) == 109
    assert next_attempt(policy, 2, 100, 125, busy) is None             # 25 + 9 s > 30 s
    scheduled = RetryPolicy(schedule=(5, 60), jitter=0, max_elapsed_s=1e9)
    assert next_attempt(scheduled, 2, 0, 5, ConnectionError()) == 65
    assert next_attempt(scheduled, 3, 0, 65, ConnectionError()) is None


def test_the_circuit_holds_an_application_until_its_next_attempt_only() -> None:
    circuit = Circuit()
    circuit.open("a", 50, "down")
    circuit.open("a", 40, "earlier")                   # never shortened by a later failure
    assert circuit.opening("a", 45) == (50, "down")
    assert circuit.opening("a", 50) is None            # due: this write tries the sink
    assert circuit.opening("b", 45) is None            # other applications are not held
    circuit.close("a")
    assert circuit.opening("a", 45) is None


def test_cut_batches_keeps_order_and_the_knobs() -> None:
    records = [record("a", i, "V0")[1] for i in range(7)]
    knobs = Batching(max_records=3, max_bytes=1 << 20, max_delay_s=1)
    batches = list(cut_batches(records, knobs))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [r for b in batches for r in b] == records
    one = len(records[0].document) + 1
    assert [len(b) for b in cut_batches(records, Batching(100, 2 * one, 1))] == [2, 2, 2, 1]


def test_max_buffer_is_a_batching_knob_with_a_default_and_a_named_error() -> None:
    [app] = applications(small={"max_buffer": 4096})
    assert app.batching.max_buffer_bytes == 4096
    [default] = applications(plain={})
    assert default.batching.max_buffer_bytes == 64 << 20
    with pytest.raises(ConfigError, match=r"applications\[bad\]\.sink\.max_buffer: expected a whole"):
        applications(bad={"max_buffer": 0.5})


class _GatedSink(Sink):
    """Writes when `gate` allows; records what was opened, written and closed."""

    TYPE = "gated"
    DEFAULT_BATCHING = Batching(max_records=10, max_bytes=1 << 20, max_delay_s=1)
    LOG: list[tuple[str, str]] = []

    def open(self) -> None:
        self.LOG.append(("open", self.application_id))

    def write(self, batch: Batch) -> None:
        if batch.batch_id.startswith("fail"):
            raise ConnectionError("down")
        self.options["gate"].wait()
        self.LOG.append(("write", batch.batch_id))

    def close(self) -> None:
        self.LOG.append(("close", self.application_id))


def test_worker_writes_one_at_a_time_per_application_kept_until_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery_writes, "IDLE_CLOSE_S", 0.05)
    gate, log = threading.Event(), _GatedSink.LOG
    log.clear()
    writes = WorkerWrites(lambda app: _GatedSink(app, {"gate": gate}))
    writes.hold()

    def batch(app: str, name: str) -> Batch:
        return Batch(app, name, [])

    assert writes.attempt(batch("a", "b1"), inline_s=0.01) is None          # in flight
    assert writes.busy("a") and not writes.busy("other") and writes.started("a", "b1")
    assert writes.outcome("a", "b1") is None
    assert writes.attempt(batch("other", "o1"), inline_s=0.01) is None      # not behind "a"
    gate.set()
    assert writes.finish("a", "b1", timeout_s=5) == Outcome(None)
    assert not writes.started("a", "b1") and writes.outcome("a", "b1") is None  # taken once
    failed = writes.attempt(batch("a", "fail-1"), inline_s=None)
    assert failed is not None and isinstance(failed.error, ConnectionError)
    assert writes.attempt(batch("a", "b2"), inline_s=None) == Outcome(None)
    assert [e for e in log if e[1] in ("a", "b1", "b2")] == [("open", "a"), ("write", "b1"),
                                                            ("write", "b2")]  # opened once
    writes.hold()           # a second instance comes before the first one leaves
    writes.release()
    time.sleep(0.3)
    assert ("close", "a") not in log
    writes.release()        # the last one leaves: closed after the idle time, on each lane
    deadline = time.monotonic() + 5
    while {("close", "a"), ("close", "other")} - set(log) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert {("close", "a"), ("close", "other")} <= set(log)
    writes.hold()           # used again: a new sink is opened
    assert writes.attempt(batch("a", "b3"), inline_s=None) == Outcome(None)
    assert log[-2:] == [("open", "a"), ("write", "b3")]


def test_a_batch_job_step_closes_its_sinks_when_it_leaves() -> None:
    """`release(linger=False)`: the sinks are closed before it returns, after the attempts."""
    gate, log = threading.Event(), _GatedSink.LOG
    log.clear()
    writes = WorkerWrites(lambda app: _GatedSink(app, {"gate": gate}))
    writes.hold()
    assert writes.attempt(Batch("a", "b1", []), inline_s=0) is None
    threading.Timer(0.2, gate.set).start()
    writes.release(linger=False)
    assert log == [("open", "a"), ("write", "b1"), ("close", "a")]
