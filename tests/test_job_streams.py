"""Closing a PortableRunner result's job service streams before the process exits."""
from __future__ import annotations

import gc
import itertools
import weakref

from apache_beam.runners.portability import portable_runner
from apache_beam.runners.runner import PipelineState

from fleetstream.runtime.job_streams import poll_until_done, release_job_streams


class _Stream:
    """Stands in for a gRPC server stream: iterable, cancellable."""

    def __init__(self) -> None:
        self.cancelled = False

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> object:
        raise StopIteration

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def test_release_cancels_the_message_stream_and_finalises_the_chained_state_stream() -> None:
    messages, states = _Stream(), _Stream()
    result = portable_runner.PipelineResult(
        job_service=None, job_id="job-1", message_stream=messages,
        state_stream=itertools.chain(["RUNNING"], states))
    state_ref = weakref.ref(states)
    del states

    gc.disable()            # the stream must go by reference counting, now, not at exit
    try:
        release_job_streams(result)
        assert messages.cancelled
        assert state_ref() is None
    finally:
        gc.enable()


def test_release_leaves_other_runners_results_alone() -> None:
    """A result that is not the PortableRunner's (the DirectRunner's) is not touched."""
    stream = _Stream()

    class DirectResult:
        def __init__(self, messages: _Stream) -> None:
            self.messages = messages

    release_job_streams(DirectResult(stream))  # type: ignore[arg-type]
    assert not stream.cancelled


def test_poll_until_done_asks_until_the_state_is_terminal() -> None:
    class Result:
        def __init__(self) -> None:
            self.asked = 0

        @property
        def state(self) -> str:
            self.asked += 1
            return PipelineState.RUNNING if self.asked < 3 else PipelineState.CANCELLED

    result = Result()
    assert poll_until_done(result, every_s=0) == PipelineState.CANCELLED  # type: ignore[arg-type]
    assert result.asked == 3
