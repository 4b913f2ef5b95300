"""What a worker sends to the state store (`io.redis.state_batch`), without Redis: coalescing
a bundle per vehicle and leaving out what was written must end in the same state as
sending every message on its own. The same on a real Redis: tests/test_state_store.py."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleetstream.io.redis.state_batch import NewestUpdates, WrittenStamps
from fleetstream.schemas.state import TS_DIGITS, StateUpdate


def update(field: str, ms: int, data: str = "x") -> StateUpdate:
    return StateUpdate(field, b"%013d" % ms + data.encode(), "")


def keep_newest(store: dict[tuple[str, str], bytes], batch) -> None:
    """The script's rule: a value is kept only when newer than the kept one."""
    for vin, updates in batch:
        for u in updates:
            kept = store.get((vin, u.field))
            if kept is None or kept[:TS_DIGITS] < u.value[:TS_DIGITS]:
                store[(vin, u.field)] = u.value


def test_a_vehicle_s_messages_become_one_update_per_field_the_newest() -> None:
    pending = NewestUpdates()
    pending.add("V1", [update("a", 5, "five"), update("b", 1)])
    pending.add("V2", [update("a", 1)])
    pending.add("V1", [update("a", 3, "late"), update("a", 9, "nine")])
    pending.add("V1", [update("a", 9, "same-time")])        # a tie keeps the first
    assert len(pending) == 2
    taken = dict(pending.take())
    assert sorted(u.value for u in taken["V1"]) == [b"%013dx" % 1, b"%013dnine" % 9]
    assert taken["V2"] == [update("a", 1)]
    assert len(pending) == 0 and pending.take() == []


def test_what_was_written_is_not_sent_again_but_newer_unchanged_data_is() -> None:
    written = WrittenStamps()
    first = [("V1", [update("a", 5), update("b", 5)])]
    assert written.unsent(first) == first
    written.record(first)
    assert written.unsent(first) == []                                   # a replay
    assert written.unsent([("V1", [update("a", 4), update("b", 6)])]) == [
        ("V1", [update("b", 6)])]                                        # late a, newer b
    assert written.unsent([("V2", [update("a", 1)])]) == [("V2", [update("a", 1)])]
    written.clear()
    assert written.unsent(first) == first


def test_the_memory_of_written_stamps_is_bounded() -> None:
    written = WrittenStamps(max_vehicles=3)
    for n in range(10):
        written.record([(f"V{n}", [update("a", 5)])])
        assert len(written._stamps) <= 3
    assert written.unsent([("V9", [update("a", 5)])]) == []


messages = st.lists(st.tuples(st.sampled_from(("V1", "V2", "V3")),
                              st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 20),
                                                 st.sampled_from(("x", "y"))),
                                       min_size=1, max_size=4)),
                    max_size=40)


@given(messages=messages, bundle=st.integers(1, 8), remembered=st.integers(1, 4),
       forget_at=st.integers(0, 40))
def test_coalesced_and_skipped_writes_end_in_the_state_of_every_message_written(
        messages, bundle: int, remembered: int, forget_at: int) -> None:
    one_by_one: dict[tuple[str, str], bytes] = {}
    for vin, entries in messages:
        keep_newest(one_by_one, [(vin, [update(*e) for e in entries])])
    store: dict[tuple[str, str], bytes] = {}
    written = WrittenStamps(max_vehicles=remembered)
    for start in range(0, len(messages), bundle):
        pending = NewestUpdates()
        for vin, entries in messages[start:start + bundle]:
            pending.add(vin, [update(*e) for e in entries])
        batch = written.unsent(pending.take())
        keep_newest(store, batch)
        written.record(batch)
        if start <= forget_at < start + bundle:
            written.clear()
    # (of entries at the same timestamp either may be kept: DATA-CONTRACTS §10)
    assert {key: value[:TS_DIGITS] for key, value in store.items()} == {
        key: value[:TS_DIGITS] for key, value in one_by_one.items()}
