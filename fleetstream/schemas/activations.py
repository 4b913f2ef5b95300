"""Activation events (DATA-CONTRACTS §6): which vehicle is activated for which application.

The newest `at` per vehicle and application wins; only `approved` delivers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetstream.schemas.timestamps import to_epoch_ms

APPROVED = "approved"
#: the known statuses, least strict first (ties between events go to the stricter)
ACTIVATION_STATUSES = ("approved", "pending", "rejected", "revoked")


@dataclass(frozen=True, slots=True)
class ActivationEvent:
    """A vehicle's activation status for one application; the newest `at` wins."""

    vin: str
    application_id: str
    status: str
    at_ms: int


def parse_activation(record: Any) -> ActivationEvent:
    """An ActivationEvent from its JSON object; ValueError naming the field otherwise."""
    if not isinstance(record, dict):
        raise ValueError("an activation event is a JSON object {vin, application_id, status, at}")
    for key in ("vin", "application_id", "status"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ValueError(f"`{key}` must be a non-empty string, got {record.get(key)!r}")
    try:
        at_ms = to_epoch_ms(record.get("at"))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"`at` is not a timestamp: {record.get('at')!r}") from None
    return ActivationEvent(record["vin"], record["application_id"], record["status"], at_ms)


# Which of two events of one pair wins (docs/permissions.md rules 1 and 2): every reader and
# writer of activations compares them this way.
def strictness(status: str) -> tuple[int, str]:
    """A sort key: stricter statuses sort higher; unknown ones above every known one."""
    if status in ACTIVATION_STATUSES:
        return ACTIVATION_STATUSES.index(status), ""
    return len(ACTIVATION_STATUSES), status


def rank(event: ActivationEvent) -> tuple[int, tuple[int, str]]:
    """Events of one pair compare by this: the greater wins."""
    return event.at_ms, strictness(event.status)


def supersedes(candidate: ActivationEvent, current: ActivationEvent | None) -> bool:
    """True when `candidate` wins over `current` (always, when there is none)."""
    return current is None or rank(candidate) > rank(current)
