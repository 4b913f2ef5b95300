"""The ingest gateway's settings (settings/ingest.py): DATA-CONTRACTS §8's shape, secrets from
the environment, errors naming the key and the fix."""
from __future__ import annotations

import pytest

from fleetstream.schemas.errors import ConfigError
from fleetstream.settings.ingest import parse_ingest_settings

ENV = {"SMARTCAR_SECRET": "s3cret", "MERCEDES_TOKEN": "t0ken"}
CONTRACT = {
    "kafka": {"bootstrap": "127.0.0.1:9092"},
    "http": {"listen": "127.0.0.1:8090", "max_body_bytes": 1048576},
    "sources": {
        "smartcar": {"topic": "raw.smartcar", "push": {"auth": {
            "type": "hmac-sha256", "header": "SC-Signature", "secret_env": "SMARTCAR_SECRET"}}},
        "mercedes": {"push": {"auth": {"type": "bearer", "token_env": "MERCEDES_TOKEN"}}},
        "bmw": {"mqtt": {"url": "mqtt://127.0.0.1:1883", "topic": "bmw/+/telemetry"}}}}


def test_the_contract_s_example_reads_with_secrets_from_the_environment() -> None:
    settings = parse_ingest_settings(CONTRACT, environ=ENV)
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert (settings.http.host, settings.http.port, settings.http.max_body_bytes) == (
        "127.0.0.1", 8090, 1048576)
    smartcar, mercedes, bmw = (settings.sources[s] for s in ("smartcar", "mercedes", "bmw"))
    assert (smartcar.push.type, smartcar.push.header, smartcar.push.secret) == (
        "hmac-sha256", "SC-Signature", b"s3cret")
    assert (mercedes.topic, mercedes.push.type, mercedes.push.secret) == (
        "raw.mercedes", "bearer", b"t0ken")
    assert bmw.push is None and bmw.bridges == {"mqtt": CONTRACT["sources"]["bmw"]["mqtt"]}
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["sources"]["mercedes"]["push"]["auth"].update(type="basic"),
     r"sources.mercedes.push.auth.type: one of hmac-sha256, bearer, none, got 'basic'"),
    (lambda c: c["sources"]["smartcar"]["push"]["auth"].update(secret_env="NOPE"),
     r"sources.smartcar.push.auth.secret_env: environment variable NOPE is not set"),
    (lambda c: c["sources"].update(tesla={}), r"sources.tesla: no way in"),
    (lambda c: c["sources"]["bmw"].update(carrier_pigeon={}), r"unknown key\(s\) carrier_pigeon"),
    (lambda c: c["http"].update(listen="8090"), r"http.listen: expected HOST:PORT"),
    (lambda c: c["http"].update(max_body_bytes=0), r"http.max_body_bytes: expected a whole"),
    (lambda c: c.update(sources={}), r"sources must name at least one source"),
])
def test_a_wrong_entry_is_refused_naming_it(change, message) -> None:
    import copy
    config = copy.deepcopy(CONTRACT)
    change(config)
    with pytest.raises(ConfigError, match=message) as error:
        parse_ingest_settings(config, environ=ENV)
    assert "s3cret" not in str(error.value) and "t0ken" not in str(error.value)
