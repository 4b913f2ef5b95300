"""The REST poller's pure rules (ingest/poll_rules.py): settings, who is polled, when,
what counts as a change, and how long trouble makes it wait."""
from __future__ import annotations

from collections import Counter
from email.utils import formatdate
from random import Random

import pytest

from fleetstream.ingest.poll_rules import (ApprovedVehicles, SeenState, backoff_s, body_hash,
                                           changed, first_due_ms, next_due_ms,
                                           parse_poll_settings, phase)
from fleetstream.ingest.poller import poll_settings
from fleetstream.schemas.activations import ActivationEvent
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.timestamps import retry_after_s
from fleetstream.settings.ingest import parse_ingest_settings

URL = "http://127.0.0.1:8095/vehicles/{vin}"
ENV = {"OEM_TOKEN": "t0ken"}


def test_the_brief_s_example_reads_with_the_token_from_the_environment() -> None:
    poll = parse_poll_settings(
        {"url": URL, "interval_s": 30, "concurrency": 4, "rate_per_s": 10,
         "auth": {"type": "bearer", "token_env": "OEM_TOKEN"},
         "activations_topic": "activations", "state_topic": "ingest-poll-state"},
        "sources.mercedes.poll", ENV)
    assert (poll.url, poll.interval_s, poll.concurrency, poll.rate_per_s) == (URL, 30, 4, 10)
    assert poll.headers == {"Authorization": "Bearer t0ken"}
    assert (poll.activations_topic, poll.state_topic) == ("activations", "ingest-poll-state")
    assert "t0ken" not in repr(poll)


@pytest.mark.parametrize("section, key", [
    ({"url": "ftp://x/{vin}"}, "url"),
    ({"url": "http://x/vehicles"}, "url"),
    ({"interval_s": 30}, "url"),
    ({"url": URL, "interval_s": 0}, "interval_s"),
    ({"url": URL, "interval_s": "30"}, "interval_s"),
    ({"url": URL, "concurrency": 1.5}, "concurrency"),
    ({"url": URL, "concurrency": True}, "concurrency"),
    ({"url": URL, "rate_per_s": -1}, "rate_per_s"),
    ({"url": URL, "timeout_s": 0}, "timeout_s"),
    ({"url": URL, "state_topic": ""}, "state_topic"),
    ({"url": URL, "activations_topic": 3}, "activations_topic"),
    ({"url": URL, "vin_prefixes": "W1K"}, "vin_prefixes"),
    ({"url": URL, "intervall_s": 30}, "intervall_s"),
    ({"url": URL, "auth": {"type": "basic"}}, "auth.type"),
    ({"url": URL, "auth": {"type": "bearer", "token_env": "UNSET_TOKEN"}}, "auth.token_env"),
    ({"url": URL, "auth": {"type": "bearer", "token": "inline"}}, "auth"),
])
def test_a_bad_poll_section_is_a_config_error_naming_the_key(section: dict, key: str) -> None:
    settings = parse_ingest_settings({"sources": {"mercedes": {"poll": section}}}, environ=ENV)
    with pytest.raises(ConfigError, match=rf"sources\.mercedes\.poll.*{key.split('.')[0]}"):
        poll_settings(settings, ENV)
    with pytest.raises(ConfigError) as error:
        poll_settings(settings, ENV)
    assert "sources.mercedes.poll" in str(error.value)
    assert key.split(".")[-1] in str(error.value)


def _event(status: str, at_ms: int, vin: str = "V1", app: str = "a") -> ActivationEvent:
    return ActivationEvent(vin, app, status, at_ms)


def test_a_vehicle_is_polled_while_approved_for_at_least_one_application() -> None:
    vehicles = ApprovedVehicles()
    vehicles.offer(_event("approved", 10, app="a"))
    vehicles.offer(_event("approved", 10, app="b"))
    vehicles.offer(_event("revoked", 20, app="a"))
    assert "V1" in vehicles                                    # still approved for b
    vehicles.offer(_event("approved", 5, app="b"))             # older: ignored
    vehicles.offer(_event("revoked", 10, app="b"))             # tie: the stricter wins
    assert "V1" not in vehicles
    vehicles.offer(_event("approved", 10, app="b"))            # tie again: revoked stays
    assert "V1" not in vehicles
    vehicles.offer(_event("approved", 30, app="a"))
    assert "V1" in vehicles
    vehicles.forget("V1", "a")                                 # tombstone
    assert "V1" not in vehicles
    for status in ("pending", "rejected", "revoked", "unknown"):
        vehicles.offer(_event(status, 1, vin=f"V-{status}"))
        assert f"V-{status}" not in vehicles


def test_first_calls_are_spread_over_the_interval() -> None:
    now, interval = 1_000_000, 30_000
    dues = [first_due_ms(f"VIN{i:05d}", now, interval, None) for i in range(3000)]
    assert all(now <= due < now + interval for due in dues)
    per_tenth = Counter((due - now) * 10 // interval for due in dues)
    assert max(per_tenth.values()) < 400, per_tenth        # 300 expected per tenth
    assert first_due_ms("VIN1", now, interval, None) == first_due_ms("VIN1", now, interval, None)
    assert 0 <= phase("VIN1") < 1


def test_after_a_restart_calls_resume_on_their_schedule() -> None:
    now, interval = 1_000_000, 30_000
    assert first_due_ms("VIN1", now, interval, now - 10_000) == now + 20_000
    assert first_due_ms("VIN1", now, interval, now - 30_000) == now
    overdue = first_due_ms("VIN1", now, interval, now - 300_000)
    assert overdue == first_due_ms("VIN1", now, interval, None)   # spread, not all at once


def test_the_next_call_keeps_the_spread_and_does_not_catch_up() -> None:
    assert next_due_ms(1_000, 1_200, 30_000) == 31_000
    assert next_due_ms(1_000, 40_000, 30_000) == 70_000


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = Random(1)
    for failures in range(1, 12):
        ceiling = min(300.0, 10 * 2 ** (failures - 1))
        waits = [backoff_s(failures, 10, 300, rng) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1                             # jitter


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_s("7", 1000.0, 30) == 7
    assert retry_after_s(formatdate(1012.0, usegmt=True), 1000.0, 30) == pytest.approx(12)
    assert retry_after_s(formatdate(900.0, usegmt=True), 1000.0, 30) == 0
    assert retry_after_s(None, 1000.0, 30) == 30
    assert retry_after_s("soon", 1000.0, 30) == 30


def test_only_a_new_body_is_a_change() -> None:
    seen = SeenState('"e1"', body_hash(b"body-1"), 1)
    assert not changed(seen, 304, '"e1"', b"")
    assert not changed(seen, 200, '"e1"', b"body-1")
    assert not changed(seen, 200, None, b"body-1")             # no ETag: the hash decides
    assert not changed(seen, 200, '"e2"', b"body-1")
    assert changed(seen, 200, '"e2"', b"body-2")
    assert changed(seen, 200, None, b"body-2")
    assert changed(SeenState(), 200, None, b"body-1")
    assert SeenState.from_json(seen.to_json()) == seen


def test_a_wrong_poll_section_stops_fleetstream_ingest_before_anything_starts() -> None:
    """Checked with the bridges, before the writer reaches Kafka (which is not there)."""
    import asyncio

    from fleetstream.ingest.service import serve

    settings = parse_ingest_settings({"kafka": {"bootstrap": "127.0.0.1:1"}, "sources": {
        "mercedes": {"poll": {"url": "http://127.0.0.1:1/vehicles/{vin}", "interval_s": -1}}}},
        "test", {})
    with pytest.raises(ConfigError, match=r"sources\.mercedes\.poll\.interval_s"):
        asyncio.run(asyncio.wait_for(serve(settings, asyncio.Event()), 5))
