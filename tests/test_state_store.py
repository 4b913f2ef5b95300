"""The latest-state store on a real Redis: the Lua script keeps the newest entry per
property instance whatever the order of writes, and the writer loses nothing when Redis
restarts under it."""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetstream.dev.redis import RedisService
from fleetstream.io.redis.state_store import StateWriter, check_state_store
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.state import (GEO_KEY, state_answer, state_key, state_updates,
                                       value_ms)
from fleetstream.schemas.timestamps import iso_ms
from tests.helpers import free_port

pytest_plugins = ["fleetstream.dev.pytest_plugin"]
pytestmark = pytest.mark.servers

#: a database of its own: the tests empty it
DB = 9
BASE_MS = 1_772_352_000_000
LOCATIONS = ("front_left", "front_right", "rear_left", "rear_right")


@pytest.fixture
def store(redis_service: RedisService):
    url = f"redis://127.0.0.1:{redis_service.port}/{DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url, client
    client.flushdb()


def message(kind: str, ms: int, value: float, failure: bool = False) -> dict:
    """One message with one entry of `kind` (a property, or a tire location)."""
    at = iso_ms(BASE_MS + ms)
    if failure:
        entry = {"failure": {"reason": "unavailable", "description": "x"}, "timestamp": at}
    elif kind == "odometer":
        entry = {"data": {"value": value, "unit": "kilometers"}, "timestamp": at}
    elif kind == "coordinates":
        entry = {"data": {"latitude": value, "longitude": value / 2}, "timestamp": at}
    else:
        entry = {"data": {"location": kind, "pressure": {"value": value, "unit": "bars"}},
                 "timestamp": at}
    capability, prop = {"odometer": ("diagnostics", "odometer"),
                        "coordinates": ("vehicle_location", "coordinates")}.get(
        kind, ("diagnostics", "tire_pressures"))
    return {capability: {prop: [entry]}}


writes = st.lists(st.tuples(st.sampled_from(("odometer", "coordinates") + LOCATIONS),
                            st.integers(0, 50_000), st.floats(1, 80), st.booleans()),
                  min_size=1, max_size=40)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=writes, seed=st.integers(0, 2 ** 32), batch=st.integers(1, 7))
def test_any_order_of_writes_keeps_the_newest_data_per_property_instance(
        store, writes, seed: int, batch: int) -> None:
    url, client = store
    client.flushdb()
    writer = StateWriter(url, batch_size=batch)
    order = list(writes)
    random.Random(seed).shuffle(order)
    writer.write(("V1", state_updates(message(*w))) for w in order)
    # the newest data entry of each kind (failures are not state; at equal times either)
    newest: dict[str, tuple[int, set[float]]] = {}
    for kind, ms, value, failure in writes:
        if failure:
            continue
        best = newest.get(kind)
        if best is None or ms > best[0]:
            newest[kind] = (ms, {value})
        elif ms == best[0]:
            best[1].add(value)
    stored = client.hgetall(state_key("V1"))
    assert len(stored) == len(newest)
    for kind, (ms, values) in newest.items():
        field = {"odometer": "diagnostics.odometer",
                 "coordinates": "vehicle_location.coordinates"}.get(
            kind, f"diagnostics.tire_pressures|{kind}").encode()
        assert value_ms(stored[field]) == BASE_MS + ms
        answer = state_answer("V1", {field: stored[field]},
                              {"diagnostics": frozenset({"odometer", "tire_pressures"}),
                               "vehicle_location": frozenset({"coordinates"})})
        entry = next(iter(next(iter(answer["data"].values())).values()))[0]
        data = orjson.loads(orjson.dumps(entry))["data"]
        kept = data.get("value", data.get("latitude", data.get("pressure", {}).get("value")))
        assert kept in values
    if "coordinates" in newest:
        (_, lat), = client.geopos(GEO_KEY, "V1")          # the newest location is indexed
        assert any(abs(lat - v) < 1e-4 for v in newest["coordinates"][1])
    else:
        assert client.geopos(GEO_KEY, "V1") == [None]


def test_a_replayed_or_late_message_changes_nothing(store) -> None:
    url, client = store
    writer = StateWriter(url)
    new, old = message("odometer", 2_000, 200.0), message("odometer", 1_000, 100.0)
    assert writer.write([("V1", state_updates(new))]) == 1
    assert writer.write([("V1", state_updates(old)), ("V1", state_updates(new))]) == 0
    assert value_ms(client.hget(state_key("V1"), "diagnostics.odometer")) == BASE_MS + 2_000


def test_an_unreachable_redis_is_a_start_up_error_naming_the_field() -> None:
    port = free_port()
    with pytest.raises(ConfigError, match=rf"^state\.redis: cannot reach Redis at "
                                          rf"redis://127\.0\.0\.1:{port}/0"):
        check_state_store(f"redis://127.0.0.1:{port}/0")


def test_the_writer_retries_through_a_redis_restart_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path))
    server = RedisService(free_port(), name="redis-restart")
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        writer = StateWriter(url, max_wait_s=60, batch_size=50)
        vehicles = [f"VIN{i:014d}" for i in range(3_000)]
        done = threading.Event()
        failure: list[BaseException] = []

        def write() -> None:
            try:
                for n, vin in enumerate(vehicles):
                    writer.write([(vin, state_updates(message("odometer", n, float(n))))])
            except BaseException as error:        # noqa: BLE001 - reported below
                failure.append(error)
            finally:
                done.set()

        thread = threading.Thread(target=write)
        thread.start()
        client = redis.Redis.from_url(url)
        while client.dbsize() < 300:            # well into the writes
            time.sleep(0.01)
        server.stop()                           # SIGTERM: Redis writes its AOF and exits
        time.sleep(1.0)
        server.start()
        assert done.wait(120) and not failure, failure
        thread.join()
        assert writer.retries > 0
        client = redis.Redis.from_url(url)
        assert client.dbsize() == len(vehicles)
        for n in (0, 299, 300, 1_500, len(vehicles) - 1):
            assert value_ms(client.hget(state_key(vehicles[n]), "diagnostics.odometer")) \
                == BASE_MS + n
    finally:
        server.stop()


def test_write_latest_state_takes_the_streaming_job_s_lists_of_messages(store) -> None:
    import apache_beam as beam

    from fleetstream.io.redis.write_state import WriteLatestState
    from fleetstream.schemas.mapped import MappedMessage
    url, client = store
    batches = [[(f"V{n}", MappedMessage("tesla", f"m{n}{i}", 0, 0, message("odometer", i, i)))
                for i in range(3)] for n in range(4)]
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create(batches) | WriteLatestState(url, batches=True)
    assert sorted(client.keys("fs:state:*")) == [f"fs:state:V{n}".encode() for n in range(4)]
    assert value_ms(client.hget("fs:state:V3", "diagnostics.odometer")) == BASE_MS + 2


def test_one_call_with_a_field_twice_keeps_the_newer_whatever_its_place(store) -> None:
    url, client = store
    writer = StateWriter(url)
    old, new = state_updates(message("odometer", 1_000, 1.0)), state_updates(
        message("odometer", 2_000, 2.0))
    assert writer.write([("V1", [*new, *old])]) == 1
    assert writer.write([("V2", [*old, *new])]) == 2
    for vin in ("V1", "V2"):
        assert value_ms(client.hget(state_key(vin), "diagnostics.odometer")) == BASE_MS + 2_000


def test_the_state_step_coalesces_without_losing_the_newest(store) -> None:
    """Bundles of five vehicles' messages in random order, through two workers in turn:
    Redis ends with the newest of each field."""
    from fleetstream.io.redis.write_state import _WriteStateFn
    from fleetstream.schemas.mapped import MappedMessage
    url, client = store
    rng = random.Random(5)
    sent = [(kind, ms) for kind in ("odometer", "coordinates", *LOCATIONS)
            for ms in rng.sample(range(10_000), 30)]
    rng.shuffle(sent)
    workers = [_WriteStateFn(url, True, 60.0, 2, max_pending=3) for _ in range(2)]
    for worker in workers:
        worker.setup()
    for start in range(0, len(sent), 17):
        worker = workers[start // 17 % 2]
        worker.start_bundle()
        for kind, ms in sent[start:start + 17]:
            vin = f"V{ms % 5}"
            worker.process([(vin, MappedMessage("tesla", "m", 0, 0, message(kind, ms, ms)))])
        worker.finish_bundle()
    for worker in workers:
        worker.teardown()
    for vin_n in range(5):
        for kind in ("odometer", "coordinates", *LOCATIONS):
            newest = max((ms for k, ms in sent if k == kind and ms % 5 == vin_n), default=None)
            field = {"odometer": "diagnostics.odometer",
                     "coordinates": "vehicle_location.coordinates"}.get(
                kind, f"diagnostics.tire_pressures|{kind}")
            stored = client.hget(state_key(f"V{vin_n}"), field)
            assert (None if stored is None else value_ms(stored) - BASE_MS) == newest
