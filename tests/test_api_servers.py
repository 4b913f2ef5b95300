"""`fleetstream api` over a real Redis and a real activations topic (a new topic per test).

The state is written by the real writer (Lua script), activations are read live by the
API's follower: what each key may see before and after revocations, over random
activation histories (no leaks), and `fleetstream api` as a process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from fleetstream.api.server import ApiService
from fleetstream.io.kafka.activations import activation_key, activation_value
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.redis.state_store import StateWriter
from fleetstream.schemas.activations import ACTIVATION_STATUSES, ActivationEvent, supersedes
from fleetstream.schemas.state import state_updates
from fleetstream.settings.config import parse_config
from tests.helpers import free_port

pytest_plugins = ["fleetstream.dev.pytest_plugin"]
pytestmark = pytest.mark.servers

DB = 10
VINS = ("5YJ3E7EB0KF000001", "5YJ3E7EB0KF000002", "WBA00000000000003")
KEYS = {"fleet-a": "key-a-0123456789abcdef", "insurer-b": "key-b-0123456789abcdef"}
ENV = {"FLEET_A_API_KEYS": KEYS["fleet-a"], "INSURER_B_API_KEYS": KEYS["insurer-b"],
       "B_SECRET": "b" * 32}
PERMITTED = {"fleet-a": {"diagnostics", "vehicle_location"}, "insurer-b": {"diagnostics"}}


def raw_config(redis_url: str) -> dict:
    return {"state": {"redis": redis_url}, "applications": [
        {"id": "fleet-a", "permissions": ["diagnostics.*", "vehicle_location.coordinates"],
         "sink": {"type": "file", "path": "/tmp/unused"}, "api_keys_env": "FLEET_A_API_KEYS"},
        {"id": "insurer-b", "permissions": ["diagnostics.odometer"],
         "sink": {"type": "file", "path": "/tmp/unused"}, "api_keys_env": "INSURER_B_API_KEYS",
         "vehicle_ids": "pseudonymous", "vehicle_id_secret_env": "B_SECRET"}]}


@pytest.fixture(scope="module")
def state_url(redis_service) -> str:
    """A store holding state for every VIN (odometer, tires, a location near Munich)."""
    url = f"redis://127.0.0.1:{redis_service.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    writer = StateWriter(url)
    writer.write((vin, state_updates({
        "diagnostics": {"odometer": [{"data": {"value": 10.0 + n, "unit": "kilometers"},
                                      "timestamp": "2026-03-01T08:00:00.000Z"}],
                        "tire_pressures": [{"data": {"location": "front_left", "pressure": {
                            "value": 2.2, "unit": "bars"}}, "timestamp": "2026-03-01T08:00:00Z"}]},
        "vehicle_location": {"coordinates": [{"data": {"latitude": 48.137 + n / 1000,
                                                       "longitude": 11.575},
                                              "timestamp": "2026-03-01T08:00:00.000Z"}]}}))
        for n, vin in enumerate(VINS))
    return url


def fresh_topic(bootstrap: str) -> str:
    topic = f"activations-api-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [Topic(topic, 1, {"cleanup.policy": "compact"})])
    return topic


def publish(bootstrap: str, topic: str, events) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for event in events:
        producer.produce(topic, key=activation_key(event), value=activation_value(event))
    assert producer.flush(10) == 0


def visible_by_rule(events) -> dict[str, set[str]]:
    """application -> the VINs whose winning event is `approved` (the reference)."""
    winner: dict[tuple[str, str], ActivationEvent] = {}
    for event in events:
        if supersedes(event, winner.get((event.vin, event.application_id))):
            winner[(event.vin, event.application_id)] = event
    visible: dict[str, set[str]] = {app: set() for app in KEYS}
    for (vin, app), event in winner.items():
        if event.status == "approved":
            visible[app].add(vin)
    return visible


def check_answers(client: TestClient, service: ApiService, expected: dict[str, set[str]]) -> int:
    """Ask everything with each key; the number of leaks (must be 0), asserting the rest."""
    leaks = 0
    for app_id, key in KEYS.items():
        app = service.config.application(app_id)
        auth = {"authorization": f"Bearer {key}"}
        listed = client.get("/v1/vehicles", headers=auth).json()["vehicles"]
        assert sorted(listed) == sorted(app.vehicle_id(v) for v in expected[app_id])
        near = client.get("/v1/vehicles?near=48.138,11.575&radius_m=5000", headers=auth)
        leaks += len(set(near.json()["vehicles"]) - set(listed))
        for vin in VINS:
            for asked in {vin, app.vehicle_id(vin)}:
                answer = client.get(f"/v1/vehicles/{asked}", headers=auth)
                should = vin in expected[app_id] and asked == app.vehicle_id(vin)
                if answer.status_code == 200:
                    leaks += not should
                    assert set(answer.json()["data"]) <= PERMITTED[app_id]
                    if app.vehicle_id_secret is not None:
                        assert vin not in answer.text
                else:
                    assert answer.status_code == 404 and not should
                    assert answer.json() == {"error": "vehicle not found"}
                prop = client.get(f"/v1/vehicles/{asked}/diagnostics/odometer", headers=auth)
                leaks += prop.status_code == 200 and not should
    return leaks


def test_a_revocation_hides_the_vehicle_at_once(kafka_service, state_url) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap)
    publish(bootstrap, topic, [ActivationEvent(VINS[0], "fleet-a", "approved", 1_000),
                               ActivationEvent(VINS[0], "insurer-b", "approved", 1_000)])
    config = parse_config(raw_config(state_url), environ=ENV)
    service = ApiService(config, bootstrap, topic, environ=ENV)
    try:
        with TestClient(service.asgi()) as client:
            auth = {"authorization": f"Bearer {KEYS['fleet-a']}"}
            first = client.get(f"/v1/vehicles/{VINS[0]}", headers=auth)
            assert first.status_code == 200
            assert first.json()["data"]["diagnostics"]["odometer"][0]["data"]["value"] == 10.0
            publish(bootstrap, topic, [ActivationEvent(VINS[0], "fleet-a", "revoked", 2_000)])
            service.follower.sync(10)
            assert client.get(f"/v1/vehicles/{VINS[0]}", headers=auth).status_code == 404
            # an older approval arriving later does not bring it back (winner rule)
            publish(bootstrap, topic, [ActivationEvent(VINS[0], "fleet-a", "approved", 1_500)])
            service.follower.sync(10)
            assert client.get(f"/v1/vehicles/{VINS[0]}", headers=auth).status_code == 404
            b_auth = {"authorization": f"Bearer {KEYS['insurer-b']}"}
            b_id = config.application("insurer-b").vehicle_id(VINS[0])
            assert client.get(f"/v1/vehicles/{b_id}", headers=b_auth).status_code == 200
    finally:
        service.close()


events = st.lists(st.builds(ActivationEvent, st.sampled_from(VINS), st.sampled_from(tuple(KEYS)),
                            st.sampled_from(ACTIVATION_STATUSES + ("paused",)),
                            st.integers(0, 20)), max_size=12)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(before=events, after=events)
def test_random_activation_histories_leak_nothing(kafka_service, state_url, before,
                                                  after) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap)
    publish(bootstrap, topic, before)
    config = parse_config(raw_config(state_url), environ=ENV)
    service = ApiService(config, bootstrap, topic, environ=ENV)
    try:
        with TestClient(service.asgi()) as client:
            assert check_answers(client, service, visible_by_rule(before)) == 0
            # then revocations of everything visible, and more random events, while it runs
            revocations = [ActivationEvent(vin, app, "revoked", 21)
                           for app, vins in visible_by_rule(before).items() for vin in vins][:2]
            publish(bootstrap, topic, revocations + after)
            service.follower.sync(10)
            assert check_answers(client, service,
                                 visible_by_rule(before + revocations + after)) == 0
    finally:
        service.close()


def api_command(bootstrap: str, state_url: str, folder: Path) -> tuple[list[str], int]:
    """(`fleetstream api` command line, its port) over a fresh activations topic (its last
    argument) that approves VINS[1] for fleet-a."""
    topic = fresh_topic(bootstrap)
    publish(bootstrap, topic, [ActivationEvent(VINS[1], "fleet-a", "approved", 1_000)])
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(raw_config(state_url)))
    port = free_port()
    return [sys.executable, "-m", "fleetstream.pipelines.cli", "api", "--config", str(config),
            "--listen", f"127.0.0.1:{port}", "--kafka", bootstrap,
            "--activations-topic", topic], port


def test_fleetstream_api_serves_and_refuses_a_missing_key_variable(
        kafka_service, state_url, tmp_path: Path) -> None:
    command, port = api_command(kafka_service.bootstrap, state_url, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    missing = subprocess.run(command, env={k: v for k, v in {**env, **ENV}.items()
                                           if k != "INSURER_B_API_KEYS"},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert "applications[insurer-b].api_keys_env" in missing.stderr
    assert "INSURER_B_API_KEYS is not set" in missing.stderr
    server = subprocess.Popen(command, env={**env, **ENV}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/vehicles/{VINS[1]}",
                                   headers={"authorization": f"Bearer {KEYS['fleet-a']}"})
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr
                time.sleep(0.2)
        assert answer.status_code == 200 and answer.json()["vin"] == VINS[1]
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
        huge = httpx.get(f"http://127.0.0.1:{port}/v1/vehicles?q=" + "x" * 20_000,
                         headers={"authorization": f"Bearer {KEYS['fleet-a']}"})
        assert 400 <= huge.status_code < 500
    finally:
        server.terminate()
        server.wait(20)


def api_workers_of(pid: int) -> list[int]:
    """The spawned worker processes whose parent is `pid` (/proc; not multiprocessing's
    resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.append(int(entry.name))
    return found


def test_fleetstream_api_workers_share_the_port_each_following_revocations(
        kafka_service, state_url, tmp_path: Path) -> None:
    command, port = api_command(kafka_service.bootstrap, state_url, tmp_path)
    server = subprocess.Popen(
        [*command, "--workers", "2"],
        env={**os.environ, **ENV, "PYTHONPATH": str(Path(__file__).parents[1])},
        stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1/vehicles/{VINS[1]}"
    auth = {"authorization": f"Bearer {KEYS['fleet-a']}"}

    def statuses(count: int = 40) -> set[int]:
        """Statuses over `count` new connections (the kernel spreads them over both)."""
        return {httpx.get(url, headers=auth).status_code for _ in range(count)}

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                workers = api_workers_of(server.pid)
                if len(workers) == 1 and statuses() == {200}:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr
            time.sleep(0.5)
        publish(kafka_service.bootstrap, command[-1],
            [ActivationEvent(VINS[1], "fleet-a", "revoked", 2_000)])
        deadline = time.monotonic() + 30
        while statuses() != {404}:              # every process hides it, not just one
            assert time.monotonic() < deadline
            time.sleep(0.2)
        server.kill()                           # the first process is gone: so is the worker
        server.wait(20)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{workers[0]}").exists() and \
                "Z" not in Path(f"/proc/{workers[0]}/stat").read_text().rsplit(")", 1)[1][:3]:
            assert time.monotonic() < deadline, "the worker outlived the first process"
            time.sleep(0.2)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(20)
