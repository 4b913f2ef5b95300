"""What a worker sends to the latest-state store: a bundle's entries, coalesced per vehicle.

    pending = NewestUpdates()
    pending.add(vin, newest_entries(message.data))       # per message of the bundle
    writer.write(pending.take())                          # [(vin, updates)], one per vehicle

`NewestUpdates` keeps per vehicle and field the newest entry of the messages added (of two
at the same timestamp the first, as Redis keeps the one it has), so a vehicle's messages of
one bundle cost one script call, with each field once; entries are encoded (JSON) only
when taken, so an entry that a newer one of the bundle replaces is never encoded. What
Redis ends up keeping is the same as if every message were written on its own.
"""
from __future__ import annotations

from typing import Any, Mapping

from fleetstream.schemas.state import NewestEntries, StateUpdate, state_update


class NewestUpdates:
    """Entries per vehicle and field, the newest kept, until taken (as updates)."""

    def __init__(self) -> None:
        self._vehicles: dict[str, NewestEntries] = {}

    def add(self, vin: str, entries: Mapping[str, tuple[bytes, dict[str, Any]]]) -> None:
        """Add a message's `newest_entries`."""
        fields = self._vehicles.get(vin)
        if fields is None:
            self._vehicles[vin] = dict(entries)
            return
        for field, stamped in entries.items():
            kept = fields.get(field)
            if kept is None or kept[0] < stamped[0]:
                fields[field] = stamped

    def __len__(self) -> int:
        """How many vehicles have updates pending."""
        return len(self._vehicles)

    def take(self) -> list[tuple[str, list[StateUpdate]]]:
        """(vin, its updates) of every vehicle, and forget them."""
        vehicles, self._vehicles = self._vehicles, {}
        return [(vin, [state_update(field, prefix, entry)
                       for field, (prefix, entry) in fields.items()])
                for vin, fields in vehicles.items()]
