"""Timestamp normalisation: every input form to epoch milliseconds, and back.

Inputs carry epoch milliseconds, epoch seconds or ISO-8601 strings
(DATA-CONTRACTS §1-§3); everything we emit is UTC ISO-8601 with milliseconds
and a `Z` (`2026-03-01T08:15:30.500Z`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from functools import lru_cache

# Epoch values below this are seconds, at or above it milliseconds
# (1e11 s is the year 5138; 1e11 ms is 1973).
_SECONDS_LIMIT = 100_000_000_000
_INFINITIES = (float("inf"), float("-inf"))
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: ".000Z" to ".999Z"
_MILLIS_TEXT = tuple(f".{millis:03d}Z" for millis in range(1000))


def to_epoch_ms(value: object) -> int:
    """Epoch milliseconds from epoch ms, epoch s (int, float or numeric string) or ISO-8601.

    Raises ValueError (or TypeError) for anything else; a naive ISO time is taken as UTC.
    """
    if type(value) is str:  # the common cases first
        return _parse_text(value)
    if type(value) is int:
        return value * 1000 if -_SECONDS_LIMIT < value < _SECONDS_LIMIT else value
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, (int, float)):
        if value != value or value in _INFINITIES:
            raise ValueError(f"not a timestamp: {value!r}")
        return int(value * 1000) if abs(value) < _SECONDS_LIMIT else int(value)
    if isinstance(value, str):
        return _parse_text(value)
    raise TypeError(f"not a timestamp: {type(value).__name__}")


def _parse_text(text: str) -> int:
    # not cached: most texts (a message's own time) are seen once; callers cache stamps
    stripped = text.strip()
    if stripped[4:5] != "-":  # not `YYYY-...`: an epoch number written as text
        return to_epoch_ms(float(stripped))
    moment = datetime.fromisoformat(stripped)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    since = moment - _EPOCH  # timedelta // timedelta is slow: it goes through microseconds
    return since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000


def iso_ms(epoch_ms: int) -> str:
    """`2026-03-01T08:15:30.500Z` for an epoch-milliseconds value."""
    seconds, millis = divmod(int(epoch_ms), 1000)
    return _iso_seconds(seconds) + _MILLIS_TEXT[millis]


@lru_cache(maxsize=65536)
def _iso_seconds(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def retry_after_s(value: str | None, now_s: float,
                  default_s: float | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); `default_s` when
    it is missing or unreadable."""
    if not value:
        return default_s
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_s)
    except (TypeError, ValueError, IndexError):
        return default_s
