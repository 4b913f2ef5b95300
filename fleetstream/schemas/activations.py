"""Activation events (DATA-CONTRACTS §6): which vehicle is activated for which application.

The newest `at` per vehicle and application wins; only `approved` delivers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetstream.schemas.timestamps import to_epoch_ms

APPROVED = "approved"
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
