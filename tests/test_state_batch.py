"""What a worker sends to the state store (`io.redis.state_batch`), without Redis: coalescing
a bundle per vehicle must end in the same state as sending every message on its own. The
same on a real Redis: tests/test_state_store.py."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleetstream.io.redis.state_batch import NewestUpdates
from fleetstream.schemas.state import TS_DIGITS, NewestEntries, StateUpdate, state_update


def entries(*stamped: tuple[str, int, str]) -> NewestEntries:
    """A message's `newest_entries`: (field, epoch ms, data) each."""
    return {field: (b"%013d" % ms, {"data": data}) for field, ms, data in stamped}


def update(field: str, ms: int, data: str = "x") -> StateUpdate:
    return state_update(field, *entries((field, ms, data))[field])


def keep_newest(store: dict[tuple[str, str], bytes], batch) -> None:
    """The script's rule: a value is kept only when newer than the kept one."""
    for vin, updates in batch:
        for u in updates:
            kept = store.get((vin, u.field))
            if kept is None or kept[:TS_DIGITS] < u.value[:TS_DIGITS]:
                store[(vin, u.field)] = u.value


def test_a_vehicle_s_messages_become_one_update_per_field_the_newest() -> None:
    pending = NewestUpdates()
    pending.add("V1", entries(("a", 5, "five"), ("b", 1, "x")))
    pending.add("V2", entries(("a", 1, "x")))
    pending.add("V1", entries(("a", 3, "late")))
    pending.add("V1", entries(("a", 9, "nine"), ("c", 2, "x")))
    pending.add("V1", entries(("a", 9, "same-time")))        # a tie keeps the first
    assert len(pending) == 2
    taken = dict(pending.take())
    assert sorted(taken["V1"]) == sorted([update("a", 9, "nine"), update("b", 1),
                                          update("c", 2)])
    assert taken["V1"][0].value == b'%013d{"data":"nine"}' % 9       # the entry's JSON
    assert taken["V2"] == [update("a", 1)]
    assert len(pending) == 0 and pending.take() == []


messages = st.lists(st.tuples(st.sampled_from(("V1", "V2", "V3")),
                              st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 20),
                                                 st.sampled_from(("x", "y"))),
                                       min_size=1, max_size=4, unique_by=lambda e: e[0])),
                    max_size=40)


@given(messages=messages, bundle=st.integers(1, 8))
def test_coalesced_writes_end_in_the_state_of_every_message_written(
        messages, bundle: int) -> None:
    one_by_one: dict[tuple[str, str], bytes] = {}
    for vin, stamped in messages:
        keep_newest(one_by_one, [(vin, [update(*e) for e in stamped])])
    store: dict[tuple[str, str], bytes] = {}
    for start in range(0, len(messages), bundle):
        pending = NewestUpdates()
        for vin, stamped in messages[start:start + bundle]:
            pending.add(vin, entries(*stamped))
        keep_newest(store, pending.take())
    # (of entries at the same timestamp either may be kept: DATA-CONTRACTS §10)
    assert {key: value[:TS_DIGITS] for key, value in store.items()} == {
        key: value[:TS_DIGITS] for key, value in one_by_one.items()}
