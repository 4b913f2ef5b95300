"""Which activation event wins: the rules every reader and writer of activations follows.

Plain functions over plain data, no Beam (DATA-CONTRACTS §6; docs/permissions.md):

- the newest `at` wins;
- on equal `at`, the stricter status wins: revoked > rejected > pending > approved, and a
  status we do not know is stricter than all of them (it delivers nothing);
- only `approved` delivers;
- an approval dated more than `MAX_FUTURE_MS` after the moment it was written is refused: a
  producer whose clock runs ahead must not pin a permission that later revocations, dated
  by correct clocks, could not beat. Other statuses dated in the future are kept: they can
  only withhold data.

`schemas.activations.supersedes` compares whole events (the activations topic's writer,
the poller); the jobs keep the compact form `Newest` ((at, approved) per pair), which orders events the
same way as far as delivery is concerned: `ActivationTable` (batch, a side input) and
`OrderAndPermitKeyed` (streaming, keyed state) apply it.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Mapping

import orjson

from fleetstream.schemas.activations import APPROVED, ActivationEvent

#: how far ahead of the time it was written an approval may be dated (clock skew allowed)
MAX_FUTURE_MS = 300_000


def approval_from_the_future(event: ActivationEvent, written_ms: int) -> bool:
    """An approval dated more than MAX_FUTURE_MS after it was written (refused)."""
    return event.status == APPROVED and event.at_ms > written_ms + MAX_FUTURE_MS


Newest = dict[tuple[str, str], tuple[int, bool]]  # (vin, app) -> (at_ms, approved)


def offer_activation(newest: Newest, key: tuple[str, str], candidate: tuple[int, bool]) -> None:
    """Keep `candidate` for `key` when it is newer; on a tie, not approved wins."""
    current = newest.get(key)
    if current is None or candidate[0] > current[0] or \
            (candidate[0] == current[0] and not candidate[1]):
        newest[key] = candidate


def newest_activations(events: Iterable[ActivationEvent]) -> Newest:
    """(vin, application) -> (at_ms, approved) of the newest event of each pair."""
    newest: Newest = {}
    for event in events:
        offer_activation(newest, (event.vin, event.application_id),
                         (event.at_ms, event.status == APPROVED))
    return newest


def approved_table(newest: Newest) -> dict[str, frozenset[str]]:
    """vin -> the applications it is approved for."""
    table: dict[str, set[str]] = {}
    for (vin, application_id), (_, approved) in newest.items():
        if approved:
            table.setdefault(vin, set()).add(application_id)
    return {vin: frozenset(apps) for vin, apps in table.items()}


def encode_table(table: Mapping[str, frozenset[str]]) -> bytes:
    """An activation table as one compressed JSON object (vin -> sorted application ids):
    a sixth of the JSON's size, for a job that carries it in its graph."""
    return zlib.compress(orjson.dumps({vin: sorted(apps) for vin, apps in table.items()}), 1)


def decode_table(encoded: bytes) -> dict[str, frozenset[str]]:
    return {vin: frozenset(apps) for vin, apps in orjson.loads(zlib.decompress(encoded)).items()}


def approved_applications(newest: Newest) -> set[str]:
    """The applications approved in `newest` (one vehicle's entries)."""
    return {app for (_, app), (_, ok) in newest.items() if ok}
