"""When Deliver tries a failed write again, and when it gives up: pure rules, no Beam.

`RetryPolicy` is the backoff (doubling, or a fixed `schedule`), jittered, capped per wait
and in total; `next_attempt` applies it to one failure, honouring the failure's own
Retry-After (`retry_after_s`). `Circuit` is what one worker knows about each application's
sink: once a write to it failed, the application's other batches on that worker are not
tried before the failed one's next attempt, so a dead sink is not hit with one timeout per
batch.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff with jitter, capped per wait and in total.

    Without `schedule` the wait doubles from `initial_backoff_s` up to `max_backoff_s`;
    with one, `schedule[n - 1]` is the wait before retry `n` and the write gives up after
    the last (a schedule over hours, like the webhook sink's). Every wait is jittered to
    `1 - jitter` .. 100 % of its value; a write also gives up once the next wait would end
    past `max_elapsed_s` since its first attempt.
    """

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_elapsed_s: float = 300.0
    schedule: tuple[float, ...] = ()
    jitter: float = 0.5

    def backoff_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1-based), jittered."""
        if self.schedule:
            ceiling = self.schedule[min(attempt, len(self.schedule)) - 1]
        else:
            ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return ceiling * random.uniform(1.0 - self.jitter, 1.0)

    def gives_up(self, attempt: int, elapsed_s: float, wait_s: float) -> bool:
        """Whether retry number `attempt`, `wait_s` from now, is one too many."""
        return (bool(self.schedule) and attempt > len(self.schedule)) or \
            elapsed_s + wait_s > self.max_elapsed_s


DEFAULT_RETRY = RetryPolicy()


def retry_after_s(error: BaseException) -> float:
    """The least wait a failure asks for: its `retry_after_s` (e.g. an HTTP Retry-After), else 0."""
    wait = getattr(error, "retry_after_s", None)
    return float(wait) if isinstance(wait, (int, float)) and wait > 0 else 0.0


def failure_reason(error: BaseException) -> str:
    """A failure as the dead letters and logs name it."""
    return f"{type(error).__name__}: {error}"


def next_attempt(policy: RetryPolicy, failures: int, first_s: float, now: float,
                 error: BaseException) -> float | None:
    """When to try again after the `failures`-th failed attempt of a batch first due at
    `first_s`: at least the policy's backoff and the error's Retry-After from `now`; None
    when the policy gives up."""
    wait = max(policy.backoff_s(failures), retry_after_s(error))
    return None if policy.gives_up(failures, now - first_s, wait) else now + wait


class Opening(NamedTuple):
    """An application's sink failed: no other write to it before `until`, because of `reason`."""

    until: float
    reason: str


class Circuit:
    """Per worker and application: open from a failed write until that batch's next attempt.

    Shared by the worker's threads (one instance per Deliver step and process); `close`d
    by any successful write. While open, a batch that is due waits until `until` instead
    of being tried: only the batches whose retry comes due try the sink.
    """

    def __init__(self) -> None:
        self._open: dict[str, Opening] = {}
        self._lock = threading.Lock()

    def opening(self, application_id: str, now: float) -> Opening | None:
        """The opening that holds a write due `now`, or None: go ahead."""
        opening = self._open.get(application_id)
        return opening if opening is not None and opening.until > now else None

    def open(self, application_id: str, until: float, reason: str) -> None:
        """Hold the application's writes until `until` (never earlier than already held)."""
        with self._lock:
            current = self._open.get(application_id)
            if current is None or until > current.until:
                self._open[application_id] = Opening(until, reason)

    def close(self, application_id: str) -> None:
        with self._lock:
            self._open.pop(application_id, None)


_CIRCUITS: dict[str, Circuit] = {}
_CIRCUITS_LOCK = threading.Lock()


def worker_circuit(name: str) -> Circuit:
    """The circuit `name` (one Deliver step) of this worker process, made on first use."""
    with _CIRCUITS_LOCK:
        circuit = _CIRCUITS.get(name)
        if circuit is None:
            circuit = _CIRCUITS[name] = Circuit()
        return circuit
