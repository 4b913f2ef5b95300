"""What a worker sends to the latest-state store: a bundle's updates, coalesced per vehicle,
minus what it has written already.

    pending = NewestUpdates()
    pending.add(vin, state_updates(message.data))        # per message of the bundle
    written = WrittenStamps(max_vehicles=10_000)
    batch = written.unsent(pending.take())                # [(vin, updates)], one per vehicle
    writer.write(batch); written.record(batch)            # once Redis has acknowledged them

`NewestUpdates` keeps per vehicle and field the newest update of the messages added (of two
at the same timestamp the first, as Redis keeps the one it has), so a vehicle's messages of
one bundle cost one script call, with each field once. `WrittenStamps` remembers per vehicle
and field the newest timestamp this worker has had acknowledged: a lower bound of what Redis
keeps, so an update not newer than it would not be kept and is not sent (a repeated or
replayed message, a source that resends unchanged readings with their old timestamp). It is
bounded (when full, it starts again empty) and only ever saves a call: forgetting
it, or starting without it, sends what the script then decides on as before. An update with
a newer timestamp is always sent, even when its data did not change: the state's entries
carry their timestamps (DATA-CONTRACTS §10).
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


class WrittenStamps:
    """Per vehicle and field the newest timestamp (13 digits) acknowledged by Redis."""

    def __init__(self, max_vehicles: int = 10_000) -> None:
        self.max_vehicles = max_vehicles
        self._stamps: dict[str, dict[str, bytes]] = {}

    def unsent(self, batch: list[tuple[str, list[StateUpdate]]]
               ) -> list[tuple[str, list[StateUpdate]]]:
        """The batch without the updates not newer than what was written (and without
        vehicles left with none)."""
        left = []
        for vin, updates in batch:
            stamps = self._stamps.get(vin)
            if stamps is not None:
                updates = [update for update in updates
                           if stamps.get(update.field, b"") < update.value[:TS_DIGITS]]
            if updates:
                left.append((vin, updates))
        return left

    def record(self, batch: list[tuple[str, list[StateUpdate]]]) -> None:
        """Note a batch from `unsent` that Redis has acknowledged (each of its updates is
        newer than what was noted)."""
        for vin, updates in batch:
            stamps = self._stamps.get(vin)
            if stamps is None:
                if len(self._stamps) >= self.max_vehicles:
                    self._stamps.clear()
                self._stamps[vin] = stamps = {}
            stamps.update({update.field: update.value[:TS_DIGITS] for update in updates})

    def clear(self) -> None:
        """Forget everything (Redis may have lost acknowledged writes)."""
        self._stamps.clear()
