"""The activation rule, as plain functions over plain data (no Beam).

For each vehicle and application the newest activation event wins (on a tie,
the one that is not `approved`), and only `approved` delivers. `ActivationTable`
(batch, a side input) and `OrderAndPermitKeyed` (streaming, keyed state) apply it.
"""
from __future__ import annotations

from typing import Iterable

from fleetstream.schemas.activations import APPROVED, ActivationEvent

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


def approved_applications(newest: Newest) -> set[str]:
    """The applications approved in `newest` (one vehicle's entries)."""
    return {app for (_, app), (_, ok) in newest.items() if ok}
