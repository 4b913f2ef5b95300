"""Kafka client errors: the code one carries, which codes pass by themselves, and
waiting those out.

    offset = retried(lambda: consumer.committed([partition], timeout=10)[0].offset, 60.0)
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from confluent_kafka import KafkaError, KafkaException

#: errors that pass once the broker is back and has caught up: a partition whose leader is not
#: elected yet (a topic created a moment ago), a client that has no metadata for the
#: partition yet, a group coordinator moving or loading (a broker just started, its
#: consumer-offsets topic new), no broker reachable
_TRANSIENT = (
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION, KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._TIMED_OUT)
T = TypeVar("T")


def error_code(error: BaseException) -> int | None:
    """The librdkafka error code a KafkaException (or an admin future's error) carries;
    None for any other error."""
    return error.args[0].code() if error.args and isinstance(error.args[0], KafkaError) \
        else None


def retried(call: Callable[[], T], timeout_s: float, pause_s: float = 0.2) -> T:
    """`call()`, called again after `pause_s` while it raises a transient or retriable
    KafkaException, until `timeout_s` have passed (then the last error is raised)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as error:
            code = error_code(error)
            if code not in _TRANSIENT and not (code is not None and error.args[0].retriable()) \
                    or time.monotonic() > deadline:
                raise
            time.sleep(pause_s)
