"""What a worker sends to the latest-state store: a bundle's updates, coalesced per vehicle.

    pending = NewestUpdates()
    pending.add(vin, state_updates(message.data))        # per message of the bundle
    writer.write(pending.take())                          # [(vin, updates)], one per vehicle

`NewestUpdates` keeps per vehicle and field the newest update of the messages added (of two
at the same timestamp the first, as Redis keeps the one it has), so a vehicle's messages of
one bundle cost one script call, with each field once. What Redis ends up keeping is the
same as if every message were written on its own.
"""
from __future__ import annotations

from typing import Sequence

from fleetstream.schemas.state import TS_DIGITS, StateUpdate


class NewestUpdates:
    """Updates per vehicle and field, the newest kept, until taken."""

    def __init__(self) -> None:
        self._vehicles: dict[str, dict[str, StateUpdate]] = {}

    def add(self, vin: str, updates: Sequence[StateUpdate]) -> None:
        fields = self._vehicles.get(vin)
        if fields is None:
            self._vehicles[vin] = fields = {}
        for update in updates:
            kept = fields.get(update.field)
            if kept is None or kept.value[:TS_DIGITS] < update.value[:TS_DIGITS]:
                fields[update.field] = update

    def __len__(self) -> int:
        """How many vehicles have updates pending."""
        return len(self._vehicles)

    def take(self) -> list[tuple[str, list[StateUpdate]]]:
        """(vin, its updates) of every vehicle, and forget them."""
        vehicles, self._vehicles = self._vehicles, {}
        return [(vin, list(fields.values())) for vin, fields in vehicles.items()]
