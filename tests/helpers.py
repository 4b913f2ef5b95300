"""Small builders shared by the tests."""
from __future__ import annotations

import socket

from fleetstream.schemas.mapped import MappedMessage


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def message(newest_ms: int, smid: str | None = None, received_ms: int | None = None,
            source: str = "tesla", odometer: float = 1.0) -> MappedMessage:
    """A mapped message with one odometer entry at `newest_ms`."""
    return MappedMessage(
        source, smid or f"id-{newest_ms}", received_ms if received_ms is not None else newest_ms,
        newest_ms,
        {"diagnostics": {"odometer": [{"data": {"value": odometer, "unit": "kilometers"},
                                       "timestamp": "t"}]}})
