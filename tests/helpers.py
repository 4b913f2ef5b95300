"""Small builders shared by the transform tests."""
from __future__ import annotations

from fleetstream.schemas.mapped import MappedMessage


def message(newest_ms: int, smid: str | None = None, received_ms: int | None = None,
            source: str = "tesla", odometer: float = 1.0) -> MappedMessage:
    """A mapped message with one odometer entry at `newest_ms`."""
    return MappedMessage(
        source, smid or f"id-{newest_ms}", received_ms if received_ms is not None else newest_ms,
        newest_ms,
        {"diagnostics": {"odometer": [{"data": {"value": odometer, "unit": "kilometers"},
                                       "timestamp": "t"}]}})
