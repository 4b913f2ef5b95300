"""`state:` and `api_keys_env` in the configuration (DATA-CONTRACTS §10), and the pure
state rules (schemas.state): what is state, how it is answered."""
from __future__ import annotations

from pathlib import Path

import pytest

from fleetstream.schemas.config import StateStore
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.state import state_answer, state_updates, value_ms
from fleetstream.settings.config import parse_config


def raw(**extra) -> dict:
    app = {"id": "fleet-a", "permissions": ["diagnostics.*"],
           "sink": {"type": "file", "path": "/tmp/unused"}}
    app.update(extra.pop("app", {}))
    return {"applications": [app], **extra}


def test_state_and_api_keys_env_are_optional_and_parsed() -> None:
    config = parse_config(raw(), Path("/tmp"))
    assert config.state is None and config.applications[0].api_keys_env is None
    config = parse_config(raw(state={"redis": "redis://127.0.0.1:6379/3"},
                              app={"api_keys_env": "FLEET_A_API_KEYS"}), Path("/tmp"))
    assert config.state == StateStore("redis://127.0.0.1:6379/3")
    assert config.applications[0].api_keys_env == "FLEET_A_API_KEYS"


@pytest.mark.parametrize("state,message", [
    ("redis://x", r"^state: expected a mapping"),
    ({"redis": "http://127.0.0.1:6379/0"}, r"^state\.redis: expected redis://"),
    ({"redis": "redis://127.0.0.1:6379/0/extra"}, r"^state\.redis: expected redis://"),
    ({"redis": 6379}, r"^state\.redis: "),
    ({"redis": "redis://127.0.0.1:6379/0", "ttl": 5}, r"^state: unknown key\(s\) ttl"),
])
def test_a_bad_state_section_is_refused_naming_the_field(state, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw(state=state), Path("/tmp"))


def test_a_bad_api_keys_env_is_refused_naming_the_application() -> None:
    with pytest.raises(ConfigError, match=r"applications\[fleet-a\]\.api_keys_env"):
        parse_config(raw(app={"api_keys_env": "NOT A NAME"}), Path("/tmp"))


def test_failures_and_unreadable_instances_are_not_state_and_the_newest_entry_of_a_message_wins(
        ) -> None:
    data = {"diagnostics": {
        "odometer": [{"data": {"value": 1.0, "unit": "kilometers"}, "timestamp": "2026-03-01T08:00:01Z"},
                     {"data": {"value": 2.0, "unit": "kilometers"}, "timestamp": "2026-03-01T08:00:02Z"},
                     {"failure": {"reason": "oem_error"}, "timestamp": "2026-03-01T08:00:03Z"}],
        "tire_pressures": [{"data": {"pressure": {"value": 2.0, "unit": "bars"}},
                            "timestamp": "2026-03-01T08:00:02Z"}],
        "speed": [{"data": {"value": 3, "unit": "kilometers_per_hour"}, "timestamp": "soon"}]},
        "vehicle_location": {"coordinates": [{"data": {"latitude": 89.9, "longitude": 1.0},
                                              "timestamp": "2026-03-01T08:00:02Z"}]}}
    updates = {u.field: u for u in state_updates(data)}
    assert set(updates) == {"diagnostics.odometer", "vehicle_location.coordinates"}
    assert b'"value":2.0' in updates["diagnostics.odometer"].value
    assert updates["vehicle_location.coordinates"].geo == ""      # beyond GEOADD's latitudes
    stored = {u.field.encode(): u.value for u in updates.values()}
    answer = state_answer("V", stored, {"diagnostics": frozenset({"odometer"})})
    assert answer["updated_at"] == "2026-03-01T08:00:02.000Z"
    assert set(answer["data"]) == {"diagnostics"}
    assert state_answer("V", stored, {"charging": frozenset({"status"})}) is None
    assert value_ms(updates["diagnostics.odometer"].value) == 1_772_352_002_000
