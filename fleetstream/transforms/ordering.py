"""The per-vehicle ordering rule, as plain functions over plain data (no Beam).

A message waits `window_ms` after its arrival for older ones of its vehicle;
messages leave in non-decreasing order of their newest entry timestamp
(`order_key`); one older than a message already sent leaves at once, marked
late; an exact repeat (same source message id) within the duplicate horizon is
dropped. `Reorder` applies the rule to one vehicle's `VehicleOrder`; the
PTransforms `OrderPerVehicle` and `OrderAndPermitKeyed` keep that state in Beam.
"""
from __future__ import annotations

import hashlib
import time
import zlib
from typing import TYPE_CHECKING, Iterable, Mapping, NamedTuple, Sequence

from fleetstream.schemas.mapped import MappedMessage

if TYPE_CHECKING:   # counts are passed in; the rules only call `add`
    from fleetstream.transforms.counters import BundleCounts

Keyed = tuple[str, MappedMessage]
KeyedList = tuple[str, list[MappedMessage]]  # one vehicle's messages, in order
Arrival = tuple[int, MappedMessage]  # (element timestamp = arrival in ms, message)


def order_key(message: MappedMessage) -> tuple[int, int, str]:
    """Sort key: newest entry time, then receive time, then identity (deterministic)."""
    return message.newest_ms, message.received_at_ms, message.source_message_id


def release_due(buffered: Sequence[Arrival], now_ms: int,
                window_ms: int) -> tuple[list[MappedMessage], list[Arrival]]:
    """Split buffered arrivals into those to send now, in order, and those to keep.

    Every message that has waited `window_ms` is due; so is every message that
    sorts before a due one, since sending it later would break the order.
    """
    due = [message for arrived, message in buffered if arrived + window_ms <= now_ms]
    if not due:
        return [], list(buffered)
    cutoff = max(order_key(m) for m in due)
    released = sorted((m for _, m in buffered if order_key(m) <= cutoff), key=order_key)
    kept = [(a, m) for a, m in buffered if order_key(m) > cutoff]
    return released, kept


#: no ids seen (a read-only default for `older`)
NO_IDS: Mapping[int, int] = {}


def seen_key(source_message_id: str) -> int:
    """What the duplicate window keeps of a source message id: 63 bits of its hash.

    9 bytes in state instead of the id's 34: a vehicle keeps horizon x rate of them
    (6,000 at 10 messages/s and 600 s), in state and in every checkpoint. Two of a
    vehicle's distinct ids collide with odds of about 1 in 10^19 per pair.
    """
    digest = hashlib.blake2b(source_message_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def drop_duplicates(messages: Iterable[MappedMessage], seen: dict[int, int],
                    horizon_ms: int, older: Mapping[int, int] = NO_IDS
                    ) -> list[MappedMessage]:
    """Messages not seen within the horizon (by receive time); updates and prunes `seen`.

    `seen` maps `seen_key(source_message_id)` to receive time and stays in insertion
    order, oldest first, so pruning stops at the first id still within the horizon: the
    cost per call is what it drops, not what it keeps. `older` holds ids seen before those
    in `seen` (read only here; see `merge_seen`).
    """
    fresh = []
    newest = None
    for message in messages:
        at = message.received_at_ms
        key = seen_key(message.source_message_id)
        earlier = seen.get(key)
        if earlier is None:
            earlier = older.get(key)
        if earlier is not None and abs(at - earlier) <= horizon_ms:
            continue
        seen.pop(key, None)      # re-inserted last, in time order
        seen[key] = at
        fresh.append(message)
        newest = at if newest is None or at > newest else newest
    if newest is not None:
        stale = []
        for key, at in seen.items():
            if at >= newest - horizon_ms:
                break
            stale.append(key)
        for key in stale:
            del seen[key]
    return fresh


def merge_seen(older: dict[int, int], recent: Mapping[int, int], horizon_ms: int
               ) -> dict[int, int]:
    """`older` with the ids of `recent`, less those past the horizon of the newest one."""
    merged = {**older, **recent}
    if not merged:
        return merged
    cutoff = max(recent.values() if recent else merged.values()) - horizon_ms
    return {smid: at for smid, at in merged.items() if at >= cutoff}


class VehicleOrder(NamedTuple):
    """All of one vehicle's ordering state, kept as one value: one state read per event."""

    buffered: list[Arrival]
    last_sent: tuple[int, int, str] | None
    seen: dict[int, int]     # seen_key(source message id) -> receive ms, oldest first
    timer_at: int | None


def empty_order() -> VehicleOrder:
    return VehicleOrder([], None, {}, None)


def plain_order(order: VehicleOrder) -> tuple:
    return ([(arrived, tuple(message)) for arrived, message in order.buffered],
            order.last_sent, order.seen, order.timer_at)


def order_from_plain(plain: tuple) -> VehicleOrder:
    buffered, last_sent, seen, timer_at = plain
    return VehicleOrder([(arrived, MappedMessage._make(fields)) for arrived, fields in buffered],
                        tuple(last_sent) if last_sent is not None else None, seen, timer_at)


class Reorder:
    """The streaming ordering rule on one vehicle's VehicleOrder, shared by the keyed steps.

    `accept` takes an arriving message; `flush` releases what is due at `now_ms`.
    Both return the new state and, when the vehicle's flush time changed, the
    time (ms) to set the flush timers to.
    """

    def __init__(self, window_ms: int, horizon_ms: int, counts: BundleCounts) -> None:
        self.window_ms = window_ms
        self.horizon_ms = horizon_ms
        self._counts = counts

    def accept(self, order: VehicleOrder, message: MappedMessage, arrived_ms: int,
               older_seen: Mapping[int, int] = NO_IDS
               ) -> tuple[VehicleOrder, MappedMessage | None, int | None]:
        """(new state, message to send at once (late) or None, new timer time or None);
        `older_seen` holds ids seen before those in `order.seen` (see `drop_duplicates`)."""
        if not drop_duplicates([message], order.seen, self.horizon_ms, older_seen):
            self._counts.add(f"{message.source}.duplicate")
            return order, None, None
        if order.last_sent is not None and order_key(message) < order.last_sent:
            self._counts.add(f"{message.source}.late")
            return order, message._replace(late=True), None
        order.buffered.append((arrived_ms, message))
        if order.timer_at is None or arrived_ms + self.window_ms < order.timer_at:
            timer_at = arrived_ms + self.window_ms
            return order._replace(timer_at=timer_at), None, timer_at
        return order, None, None

    def flush(self, order: VehicleOrder, now_ms: int
              ) -> tuple[VehicleOrder, list[MappedMessage], int | None]:
        """(new state, messages released in order, new timer time or None)."""
        released, kept = release_due(order.buffered, now_ms, self.window_ms)
        if not released:
            return order, [], None
        timer_at = min(a for a, _ in kept) + self.window_ms if kept else None
        return (order._replace(buffered=kept, timer_at=timer_at,
                               last_sent=order_key(released[-1])),
                released, timer_at)


def vehicle_shard(vin: str, shards: int) -> int:
    """The shard (0 .. shards-1) a vehicle's keyed work goes to: the same for all its data."""
    return zlib.crc32(vin.encode()) % shards


def wall_ms() -> int:
    return int(time.time() * 1000)
