"""MappedMessage: one source message in the common model, between mapping and permissions."""
from __future__ import annotations

from typing import Any, NamedTuple

#: capability -> property -> list of entries ({"data"|"failure", "timestamp"})
Data = dict[str, dict[str, list[dict[str, Any]]]]


class MappedMessage(NamedTuple):
    """What flows, keyed by VIN, from MapToAutoApi through OrderPerVehicle to PermitByActivation."""

    source: str
    source_message_id: str
    received_at_ms: int
    newest_ms: int          # newest entry timestamp (epoch ms): the per-vehicle order
    #: the data; after `PermitByActivation.prepare()`, each application's permitted part
    #: as JSON instead (`transforms.permissions.PreparedData`, a tuple)
    data: Data
    late: bool = False      # sent after a newer message of the same vehicle
