"""A simulated fleet whose telemetry arrives as raw envelopes (DATA-CONTRACTS §1, §3).

Vehicles are spread round-robin over the sources (tesla, bmw, mercedes,
smartcar), each with a VIN fit for its maker. They drive around a home city,
park, and plug in to charge: positions move smoothly, the odometer only grows,
the state of charge falls while driving and rises while charging. Each source's
encoder (`formats`) writes the maker's own payload: field names, units, codes.

Timing: simulated time starts at `start_ms`. Each vehicle sends one message
every `1 / rate` seconds (its first at a random offset within that interval);
the envelope's `received_at` is 0.4-2 s after the message was made, never
before the vehicle's previous one, and envelopes come out in `received_at`
order. With `duration_s`, a vehicle sends while its message time is before
`start_ms + duration_s * 1000`: `vehicles * duration_s * rate` messages when
`duration_s * rate` is whole. With `messages`, the stream stops after that many
envelopes; with neither, it never ends.

Trouble, each at its own rate per message:

- `error_rate`: a third each of values the maker marks invalid (tesla
  `invalid: true`, smartcar status ERROR; bmw and mercedes, which have no
  marker, get an unreadable value instead), unreadable values (`"abc"` as an
  odometer), and malformed messages (truncated JSON or no VIN);
- `duplicate_rate`: the envelope is sent twice;
- `verify_rate`: a smartcar VERIFY event comes before a smartcar message.

`tesla_telemetry` (not among the default `SOURCES`: pass `sources`) sends the
tesla vehicles' records as fleet-telemetry protobuf (`payload_b64`,
`record_type` ``V``), with ``connectivity`` and the odd ``errors`` record
beside them; a malformed one is cut short.

The same arguments give the same envelopes, byte for byte.

    from fleetstream.simulator import activations, simulate, write_envelopes

    write_envelopes("raw.jsonl.gz", simulate(100, duration_s=3600, rate=0.1, seed=7))
    events = activations(100, ["fleet-a", "insurer-b"], seed=7)
"""
from __future__ import annotations

import gzip
import heapq
import itertools
import os
from random import Random
from typing import IO, Iterable, Iterator, Sequence

import orjson

from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms
from fleetstream.simulator.formats import FORMATS, SNAPSHOT_EVERY, PayloadFormat, verify_event
from fleetstream.simulator.vehicle import Vehicle

START_MS = to_epoch_ms("2026-03-01T08:00:00Z")
#: the sources a fleet spreads over unless told otherwise; `FORMATS` has more (tesla_telemetry)
SOURCES: tuple[str, ...] = ("tesla", "bmw", "mercedes", "smartcar")
DEFAULT_RATE = 0.1
DEFAULT_ERROR_RATE = 0.01
DEFAULT_DUPLICATE_RATE = 0.001
DEFAULT_VERIFY_RATE = 0.001

_LATENCY_MS = (400, 2000)
_TROUBLE_KINDS = ("unavailable", "unreadable", "malformed")
_LINES_PER_WRITE = 4096
_ACTIVATION_STATUSES = ("approved", "pending", "revoked", "rejected")
_ACTIVATION_WEIGHTS = (85, 7, 5, 3)
_DAY_MS = 86_400_000

#: {"source", "received_at", "payload"}, or `payload_b64` and `record_type` for tesla_telemetry
Envelope = dict[str, str]


def fleet(vehicles: int, *, seed: int = 0, sources: Sequence[str] = SOURCES,
          start_ms: int = START_MS) -> list[Vehicle]:
    """The fleet's vehicles in their state at `start_ms`, spread round-robin over `sources`."""
    _check_fleet(vehicles, sources)
    return [Vehicle(seed, index, sources[index % len(sources)], start_ms) for index in range(vehicles)]


def fleet_vins(vehicles: int, *, seed: int = 0, sources: Sequence[str] = SOURCES) -> list[str]:
    """The VINs of the fleet `simulate` drives for the same arguments."""
    return [car.vin for car in fleet(vehicles, seed=seed, sources=sources)]


def simulate(vehicles: int, *, messages: int | None = None, duration_s: float | None = None,
             rate: float = DEFAULT_RATE, start_ms: int = START_MS, seed: int = 0,
             error_rate: float = DEFAULT_ERROR_RATE, duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
             verify_rate: float = DEFAULT_VERIFY_RATE,
             sources: Sequence[str] = SOURCES) -> Iterator[Envelope]:
    """Envelopes from a fleet of `vehicles`, in `received_at` order (see the module docstring).

    `rate` is messages per second per vehicle. Raises ValueError for a bad argument.
    """
    return (envelope for _, envelope in simulate_keyed(
        vehicles, messages=messages, duration_s=duration_s, rate=rate, start_ms=start_ms,
        seed=seed, error_rate=error_rate, duplicate_rate=duplicate_rate,
        verify_rate=verify_rate, sources=sources))


def simulate_keyed(vehicles: int, *, messages: int | None = None,
                   duration_s: float | None = None, rate: float = DEFAULT_RATE,
                   start_ms: int = START_MS, seed: int = 0,
                   error_rate: float = DEFAULT_ERROR_RATE,
                   duplicate_rate: float = DEFAULT_DUPLICATE_RATE,
                   verify_rate: float = DEFAULT_VERIFY_RATE,
                   sources: Sequence[str] = SOURCES) -> Iterator[tuple[str, Envelope]]:
    """`simulate`, each envelope with the VIN of the vehicle that sent it (a Kafka key)."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if messages is not None and messages < 0:
        raise ValueError(f"messages must not be negative, got {messages}")
    if duration_s is not None and duration_s < 0:
        raise ValueError(f"duration_s must not be negative, got {duration_s}")
    for name, value in (("error_rate", error_rate), ("duplicate_rate", duplicate_rate),
                        ("verify_rate", verify_rate)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
    cars = fleet(vehicles, seed=seed, sources=sources, start_ms=start_ms)
    end_ms = None if duration_s is None else start_ms + duration_s * 1000
    network = _Network(seed, error_rate, duplicate_rate, verify_rate)
    envelopes = _envelopes(cars, 1000 / rate, start_ms, end_ms, network)
    return envelopes if messages is None else itertools.islice(envelopes, messages)


def write_envelopes(path: str | os.PathLike[str], envelopes: Iterable[Envelope]) -> int:
    """Write envelopes as JSON lines to `path` (gzip-compressed when it ends in `.gz`); the count."""
    count = 0
    lines: list[bytes] = []
    out: IO[bytes]
    with (gzip.open(path, "wb", compresslevel=1) if os.fspath(path).endswith(".gz")
          else open(path, "wb")) as out:
        for envelope in envelopes:
            lines.append(orjson.dumps(envelope, option=orjson.OPT_APPEND_NEWLINE))
            if len(lines) == _LINES_PER_WRITE:
                count += _flush(out, lines)
        count += _flush(out, lines)
    return count


def activations(vehicles: int, application_ids: Sequence[str], *, seed: int = 0,
                sources: Sequence[str] = SOURCES, at_ms: int = START_MS) -> list[dict[str, str]]:
    """Activation events (§6) for each vehicle of the fleet and application, oldest first.

    About 85% of pairs end `approved`, the rest `pending`, `revoked` (approved
    first, revoked later) or `rejected`; every status holds by `at_ms`.
    """
    rng = Random(f"fleetstream-activations:{seed}")
    events = []
    for vin in fleet_vins(vehicles, seed=seed, sources=sources):
        for application_id in application_ids:
            status = rng.choices(_ACTIVATION_STATUSES, _ACTIVATION_WEIGHTS)[0]
            decided_ms = at_ms - rng.randrange(7 * _DAY_MS)
            if status == "revoked":
                approved_ms = decided_ms - rng.randrange(1, 30 * _DAY_MS)
                events.append({"vin": vin, "application_id": application_id, "status": "approved",
                               "at": iso_ms(approved_ms)})
            events.append({"vin": vin, "application_id": application_id, "status": status,
                           "at": iso_ms(decided_ms)})
    return sorted(events, key=lambda event: event["at"])


class _Network:
    """Latency and trouble between the cars and us, from one seeded random stream."""

    def __init__(self, seed: int, error_rate: float, duplicate_rate: float, verify_rate: float) -> None:
        self.rng = Random(f"fleetstream-network:{seed}")
        self.error_rate = error_rate
        self.duplicate_rate = duplicate_rate
        self.verify_rate = verify_rate

    def latency_ms(self) -> int:
        low, high = _LATENCY_MS
        return low + int(self.rng.random() * (high - low))

    def deliver(self, fmt: PayloadFormat, payload: dict, received_at: str, at_ms: int) -> list[Envelope]:
        """The envelopes one vehicle message turns into: maybe spoilt, preceded or repeated."""
        rng = self.rng
        sent = []
        if fmt.source == "smartcar" and rng.random() < self.verify_rate:
            sent.append(_envelope(fmt.source, received_at, verify_event(rng, at_ms)))
        companions = fmt.companions(payload, at_ms, rng)  # before trouble: the server's own
        fields = self._spoil(fmt, payload) if rng.random() < self.error_rate else fmt.wire(payload)
        sent.append({"source": fmt.source, "received_at": received_at, **fields})
        if rng.random() < self.duplicate_rate:
            sent.append(dict(sent[-1]))
        sent += [{"source": fmt.source, "received_at": received_at, **fields}
                 for fields in companions]
        return sent

    def _spoil(self, fmt: PayloadFormat, payload: dict) -> dict[str, str]:
        """The payload fields with one kind of trouble in the payload."""
        rng = self.rng
        kind = rng.choice(_TROUBLE_KINDS)
        if kind == "malformed" and rng.random() < 0.5:
            return fmt.truncated(payload, rng)
        if kind == "malformed":
            fmt.drop_vin(payload)
        elif not (kind == "unavailable" and fmt.mark_unavailable(payload, rng)):
            fmt.spoil(payload, rng)
        return fmt.wire(payload)


def _envelopes(cars: list[Vehicle], interval_ms: float, start_ms: int, end_ms: float | None,
               network: _Network) -> Iterator[tuple[str, Envelope]]:
    phases_ms = [car.rng.random() * interval_ms for car in cars]
    # (received_ms, car index, made_ms) of each car's next message
    queue = [(int(start_ms + phase) + network.latency_ms(), car.index, int(start_ms + phase))
             for car, phase in zip(cars, phases_ms) if end_ms is None or start_ms + phase < end_ms]
    heapq.heapify(queue)
    while queue:
        received_ms, index, made_ms = queue[0]
        car = cars[index]
        fmt = FORMATS[car.source]
        car.advance(made_ms)
        payload = fmt.encode(car, made_ms, car.messages_sent % SNAPSHOT_EVERY == 0 or car.mode_changed)
        car.mode_changed = False
        car.messages_sent += 1
        for envelope in network.deliver(fmt, payload, iso_ms(received_ms), made_ms):
            yield car.vin, envelope
        next_made_ms = start_ms + phases_ms[index] + car.messages_sent * interval_ms
        if end_ms is None or next_made_ms < end_ms:
            next_made_ms = int(next_made_ms)
            next_received_ms = max(next_made_ms + network.latency_ms(), received_ms)
            heapq.heapreplace(queue, (next_received_ms, index, next_made_ms))
        else:
            heapq.heappop(queue)


def _text(payload: dict) -> str:
    return orjson.dumps(payload).decode()


def _envelope(source: str, received_at: str, payload: dict) -> Envelope:
    return {"source": source, "received_at": received_at, "payload": _text(payload)}


def _flush(out: IO[bytes], lines: list[bytes]) -> int:
    count = len(lines)
    out.write(b"".join(lines))
    lines.clear()
    return count


def _check_fleet(vehicles: int, sources: Sequence[str]) -> None:
    if vehicles < 1:
        raise ValueError(f"vehicles must be at least 1, got {vehicles}")
    unknown = [source for source in sources if source not in FORMATS]
    if unknown or not sources:
        raise ValueError(f"sources must be some of {', '.join(FORMATS)}, got {list(sources)}")
