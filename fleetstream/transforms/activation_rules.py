"""Which activation event wins: the rules every reader and writer of activations follows.

Pure functions over `ActivationEvent`s (DATA-CONTRACTS §6; docs/permissions.md):

- the newest `at` wins;
- on equal `at`, the stricter status wins: revoked > rejected > pending > approved, and a
  status we do not know is stricter than all of them (it delivers nothing);
- an approval dated more than `MAX_FUTURE_MS` after the moment it was written is refused: a
  producer whose clock runs ahead must not pin a permission that later revocations, dated
  by correct clocks, could not beat. Other statuses dated in the future are kept: they can
  only withhold data.
"""
from __future__ import annotations

from fleetstream.schemas.config import APPROVED, ActivationEvent

#: known statuses, least strict first
STRICTNESS_ORDER = ("approved", "pending", "rejected", "revoked")
#: how far ahead of the time it was written an approval may be dated (clock skew allowed)
MAX_FUTURE_MS = 300_000


def strictness(status: str) -> tuple[int, str]:
    """A sort key: stricter statuses sort higher; unknown ones above every known one."""
    if status in STRICTNESS_ORDER:
        return STRICTNESS_ORDER.index(status), ""
    return len(STRICTNESS_ORDER), status


def rank(event: ActivationEvent) -> tuple[int, tuple[int, str]]:
    """Events of one pair compare by this: the greater wins."""
    return event.at_ms, strictness(event.status)


def supersedes(candidate: ActivationEvent, current: ActivationEvent | None) -> bool:
    """True when `candidate` wins over `current` (always, when there is none)."""
    return current is None or rank(candidate) > rank(current)


def approval_from_the_future(event: ActivationEvent, written_ms: int) -> bool:
    """An approval dated more than MAX_FUTURE_MS after it was written (refused)."""
    return event.status == APPROVED and event.at_ms > written_ms + MAX_FUTURE_MS
