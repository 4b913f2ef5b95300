"""Sink writes off the delivery step's thread, so a slow or failing sink holds only its own
application: no Beam here.

A worker runs its keyed delivery step on one thread, one key at a time: a write that
waits there (a sink that is down and takes its timeout to say so, or one that hangs)
would hold every application's batches behind it. `WorkerWrites` keeps, per Deliver step
and worker process, each application's sink and one thread that alone uses it. Attempts
run there one after the other (a sink is never written by two threads at once); the step
waits for one only briefly (`inline_s`), and the key that started an attempt asks for its
outcome later (`outcome`), which is kept until that key asks.

The sinks outlive the step's instances: the DirectRunner makes, sets up and tears down an
instance per bundle (and each timer firing is a bundle), so opening every application's
sink in `setup` would cost each bundle tens of milliseconds (a webhook sink's HTTP client
alone 50 ms). A sink is opened at its application's first attempt in the process, and
closed on its thread, after the attempts before it, once no instance of the step has held
the writes for `IDLE_CLOSE_S` (a job cancelled on a long-lived worker pool).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Callable, NamedTuple

from fleetstream.schemas.delivery import Batch

if TYPE_CHECKING:   # io sits above transforms: its Sink is only named here
    from fleetstream.io.sinks.base import Sink

#: a key whose batch is being written (or waits for its application's thread) asks again
#: after this long
POLL_S = 0.1
#: how long the step waits for a batch's first attempt (a healthy sink answers within it)
#: and for a retry's (the sink failed last time: do not wait for its timeout)
FIRST_INLINE_S, RETRY_INLINE_S = 0.5, 0.05
#: the sinks are closed once no instance of the step held the writes for this long
IDLE_CLOSE_S = 30.0


class Outcome(NamedTuple):
    """A finished attempt: `error` is None once the batch was written."""

    error: Exception | None


class WorkerWrites:
    """One worker process's attempts of one Deliver step, by (application, batch id), and
    each application's sink, made by `make_sink(application_id)` and opened on its
    application's thread at the first attempt there."""

    def __init__(self, make_sink: Callable[[str], Sink]) -> None:
        self._make_sink = make_sink
        self._lanes: dict[str, _Lane] = {}
        self._attempts: dict[tuple[str, str], Future] = {}
        self._holders = 0
        self._idle: threading.Timer | None = None
        self._lock = threading.Lock()

    def hold(self) -> None:
        """A step instance uses the writes (its `setup`): they stay open."""
        with self._lock:
            self._holders += 1
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None

    def release(self, linger: bool = True) -> None:
        """A step instance is done (its `teardown`): once none holds the writes, close the
        sinks after `IDLE_CLOSE_S` unless one comes back, or at once (waiting for the
        attempts before) when not `linger` (a batch job's step, torn down at its end)."""
        with self._lock:
            self._holders -= 1
            if self._holders:
                return
            if linger:
                self._idle = threading.Timer(IDLE_CLOSE_S, self._close_if_idle)
                self._idle.daemon = True
                self._idle.start()
                return
        for lane in self._close_if_idle():
            lane.thread.shutdown(wait=True)

    def busy(self, application_id: str) -> bool:
        """Whether an attempt of the application is still running or queued."""
        with self._lock:
            lane = self._lanes.get(application_id)
        # one thread per lane runs its attempts in order: the last one ends last
        return lane is not None and lane.last is not None and not lane.last.done()

    def started(self, application_id: str, batch_id: str) -> bool:
        """Whether this process has an attempt of the batch whose outcome nobody took yet."""
        with self._lock:
            return (application_id, batch_id) in self._attempts

    def attempt(self, batch: Batch, inline_s: float | None) -> Outcome | None:
        """Start writing `batch` on its application's thread; its outcome if it ends within
        `inline_s` (None: wait for it), else None (in flight: ask `outcome` later)."""
        app = batch.application_id
        with self._lock:
            lane = self._lanes.get(app)
            if lane is None:
                lane = self._lanes[app] = _Lane(app, self._make_sink)
            attempt = lane.last = lane.thread.submit(lane.write, batch)
            self._attempts[(app, batch.batch_id)] = attempt
        wait([attempt], timeout=inline_s)
        return self.outcome(app, batch.batch_id)

    def outcome(self, application_id: str, batch_id: str) -> Outcome | None:
        """The batch's attempt once it ended (then forgotten); None while it runs or when
        this process started none."""
        with self._lock:
            attempt = self._attempts.get((application_id, batch_id))
            if attempt is None or not attempt.done():
                return None
            del self._attempts[(application_id, batch_id)]
        return Outcome(attempt.exception())     # type: ignore[arg-type]

    def finish(self, application_id: str, batch_id: str, timeout_s: float) -> Outcome | None:
        """Wait up to `timeout_s` for the batch's attempt: its outcome, or None if there is
        none or it did not end in time."""
        with self._lock:
            attempt = self._attempts.get((application_id, batch_id))
        if attempt is not None:
            wait([attempt], timeout=timeout_s)
        return self.outcome(application_id, batch_id)

    def _close_if_idle(self) -> list[_Lane]:
        """Close every sink on its own thread after the attempts before it, and let the
        threads end; the lanes closed (none if a step instance holds the writes again). The
        next attempt makes a new lane, and opens a new sink there."""
        with self._lock:
            if self._holders:
                return []
            lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.thread.submit(lane.close)
            lane.thread.shutdown(wait=False)
        return lanes


class _Lane:
    """One application's thread, and the sink that only it uses."""

    def __init__(self, application_id: str, make_sink: Callable[[str], Sink]) -> None:
        self.application_id = application_id
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=f"deliver-{application_id}")
        self._make_sink = make_sink
        self._sink: Sink | None = None
        #: the attempt submitted last
        self.last: Future | None = None

    def write(self, batch: Batch) -> None:
        """One attempt (on the lane's thread): the sink made and opened first if it is not."""
        if self._sink is None:
            sink = self._make_sink(self.application_id)
            try:
                sink.open()
            except BaseException:
                sink.close()
                raise
            self._sink = sink
        self._sink.write(batch)

    def close(self) -> None:
        """Close the sink (on the lane's thread)."""
        if self._sink is not None:
            self._sink.close()
            self._sink = None


_WRITES: dict[str, WorkerWrites] = {}
_WRITES_LOCK = threading.Lock()


def worker_writes(name: str, make_sink: Callable[[str], Sink]) -> WorkerWrites:
    """The writes of Deliver step `name` in this worker process, made on first use."""
    with _WRITES_LOCK:
        writes = _WRITES.get(name)
        if writes is None:
            writes = _WRITES[name] = WorkerWrites(make_sink)
        return writes
