"""`errors.retried`: transient broker errors are waited out, others raised at once."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from fleetstream.io.kafka.errors import retried


def failing(codes: list[int], result: str = "ok"):
    """A call that raises a KafkaException for each code in turn, then returns `result`."""
    calls: list[float] = []

    def call() -> str:
        calls.append(time.monotonic())
        if len(calls) <= len(codes):
            raise KafkaException(KafkaError(codes[len(calls) - 1]))
        return result
    return call, calls


@pytest.mark.parametrize("code", [KafkaError.NOT_COORDINATOR, KafkaError._UNKNOWN_PARTITION,
                                  KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                  KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
                                  KafkaError.LEADER_NOT_AVAILABLE])
def test_a_transient_error_is_called_again_until_the_call_succeeds(code: int) -> None:
    call, calls = failing([code, code])
    assert retried(call, timeout_s=5, pause_s=0.01) == "ok"
    assert len(calls) == 3


def test_another_error_is_raised_at_once() -> None:
    call, calls = failing([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException) as raised:
        retried(call, timeout_s=5, pause_s=0.01)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert len(calls) == 1


def test_a_transient_error_past_the_timeout_is_raised() -> None:
    call, calls = failing([KafkaError.NOT_COORDINATOR] * 10_000)
    with pytest.raises(KafkaException) as raised:
        retried(call, timeout_s=0.3, pause_s=0.05)
    assert raised.value.args[0].code() == KafkaError.NOT_COORDINATOR
    assert len(calls) >= 2 and calls[-1] - calls[0] >= 0.3     # asked again until the deadline
