"""Which activation event wins (schemas.activations, transforms.activations), without Beam or
Kafka."""
from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from fleetstream.schemas.activations import ACTIVATION_STATUSES, ActivationEvent, rank, supersedes
from fleetstream.transforms.activations import (MAX_FUTURE_MS, approval_from_the_future,
                                                approved_table, newest_activations)

STATUSES = (*ACTIVATION_STATUSES, "suspended")       # and one nobody defined

events = st.builds(ActivationEvent, st.sampled_from(("V1", "V2")), st.sampled_from(("a", "b")),
                   st.sampled_from(STATUSES), st.integers(0, 5))


def test_the_newest_at_wins_whatever_the_status() -> None:
    old_revocation = ActivationEvent("V", "a", "revoked", 1)
    new_approval = ActivationEvent("V", "a", "approved", 2)
    assert supersedes(new_approval, old_revocation)
    assert not supersedes(old_revocation, new_approval)


def test_on_a_tie_the_stricter_status_wins_and_an_unknown_one_is_strictest() -> None:
    for weaker, stricter in itertools.combinations(STATUSES, 2):
        weak, strict = (ActivationEvent("V", "a", s, 7) for s in (weaker, stricter))
        assert supersedes(strict, weak) and not supersedes(weak, strict), (weaker, stricter)


def test_an_event_does_not_supersede_itself() -> None:
    event = ActivationEvent("V", "a", "approved", 7)
    assert supersedes(event, None) and not supersedes(event, event)


@given(st.lists(events, max_size=30), st.randoms())
def test_the_winner_does_not_depend_on_the_order_events_arrive_in(history, random) -> None:
    shuffled = list(history)
    random.shuffle(shuffled)
    winners = {}
    for event in shuffled:
        key = (event.vin, event.application_id)
        if supersedes(event, winners.get(key)):
            winners[key] = event
    assert winners == {key: max(group, key=rank) for key, group in itertools.groupby(
        sorted(history, key=lambda e: (e.vin, e.application_id)),
        key=lambda e: (e.vin, e.application_id))}
    # the streaming job's compact form (at, approved) approves exactly the same pairs
    approved = approved_table(newest_activations(shuffled))
    assert {(vin, app) for vin, apps in approved.items() for app in apps} == \
        {key for key, event in winners.items() if event.status == "approved"}


def test_an_approval_dated_past_the_allowed_skew_is_refused_other_statuses_are_not() -> None:
    now = 1_000_000_000
    assert not approval_from_the_future(ActivationEvent("V", "a", "approved", now + MAX_FUTURE_MS),
                                        now)
    assert approval_from_the_future(ActivationEvent("V", "a", "approved", now + MAX_FUTURE_MS + 1),
                                    now)
    assert not approval_from_the_future(ActivationEvent("V", "a", "revoked", now * 2), now)
