"""Nothing answered 202 is lost: not while Kafka is away (a broker of the test's own, stopped
for 30 s under load), not when the gateway is killed with SIGKILL under load."""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from fleetstream.dev.kafka import Kafka
from fleetstream.dev.service import port_open
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.topic_reader import read_records
from tests.helpers import free_port
from tests.ingest_http_harness import ENVIRON, TOKEN, Gateway, settings

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Load:
    """Threads pushing unique bodies to /v1/push/mercedes over keep-alive connections."""

    port: int
    threads: int = 6
    #: (started, finished, body, status, Retry-After) of every answered request
    answers: list[tuple[float, float, bytes, int, str | None]] = field(default_factory=list)
    #: every body sent, answered or not
    attempted: set[bytes] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> "Load":
        for n in range(self.threads):
            worker = threading.Thread(target=self._push, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _push(self, n: int) -> None:
        conn: http.client.HTTPConnection | None = None
        sequence = 0
        while not self._stop.is_set():
            sequence += 1
            body = f'{{"worker": {n}, "n": {sequence}, "id": "{uuid.uuid4()}"}}'.encode()
            started = time.monotonic()
            self.attempted.add(body)
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", f"/v1/push/mercedes/VIN{n}", body=body,
                             headers={"Authorization": f"Bearer {TOKEN}"})
                response = conn.getresponse()
                response.read()
                self.answers.append((started, time.monotonic(), body, response.status,
                                     response.getheader("Retry-After")))
            except (OSError, http.client.HTTPException):
                conn = None        # no answer: the request counts as not accepted
                time.sleep(0.05)

    def accepted(self) -> list[bytes]:
        return [body for _, _, body, status, _ in self.answers if status == 202]


def assert_every_202_written_once_or_as_copies(records: list[bytes], load: Load) -> None:
    counts = Counter(records)
    missing = [body for body in load.accepted() if body not in counts]
    assert not missing, f"{len(missing)} of {len(load.accepted())} accepted pushes are lost"
    # anything else in the topic is a copy of a request that was sent (a 503 the broker took
    # after all, or one in flight at the kill), never a mangled record
    assert set(counts) <= load.attempted


@pytest.mark.servers
def test_while_kafka_is_away_pushes_get_503_and_every_202_is_kept(private_kafka: Kafka) -> None:
    config = settings(private_kafka.bootstrap)
    with Gateway(config, writer_timeout_s=5.0) as gateway, Load(gateway.port) as load:
        time.sleep(3)
        private_kafka.stop()
        stopped = time.monotonic()
        time.sleep(30)
        restarting = time.monotonic()
        private_kafka.start()
        time.sleep(10)
    while_down = [a for a in load.answers if a[0] > stopped + 1 and a[1] < restarting]
    assert while_down, "no request was answered while Kafka was down"
    assert {status for _, _, _, status, _ in while_down} == {503}
    assert all(retry_after == "5" for *_, retry_after in while_down)
    after = [a for a in load.answers if a[0] > restarting + 5]
    assert after and all(status == 202 for _, _, _, status, _ in after[-20:])
    records = [r.value() for r in read_records(private_kafka.bootstrap, gateway.topic("mercedes"),
                                               timeout_s=30)]
    assert_every_202_written_once_or_as_copies(records, load)


def start_gateway(kafka: Kafka, folder: Path, *options: str
                  ) -> tuple[subprocess.Popen, int, str]:
    """`fleetstream ingest` as a subprocess with one bearer source (mercedes) on a fresh topic:
    (the process, its HTTP port, the topic). Its stderr is a pipe, for a failing start."""
    topic = f"t{uuid.uuid4().hex[:10]}.mercedes"
    create_topics(kafka.bootstrap, [Topic(topic)])
    port = free_port()
    config = folder / "ingest.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap": kafka.bootstrap},
        "http": {"listen": f"127.0.0.1:{port}"},
        "sources": {"mercedes": {"topic": topic,
                                 "push": {"auth": {"type": "bearer", "token_env": "MB_TOKEN"}}}}}))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "fleetstream.pipelines.cli", "ingest", "--config", str(config),
         *options],
        env={**os.environ, **ENVIRON, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return gateway, port, topic


def test_a_gateway_killed_under_load_lost_no_accepted_push(kafka_service: Kafka,
                                                           tmp_path: Path) -> None:
    gateway, port, topic = start_gateway(kafka_service, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert gateway.poll() is None, gateway.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        with Load(port) as load:
            time.sleep(4)
            os.kill(gateway.pid, signal.SIGKILL)
            gateway.wait(10)
            time.sleep(0.5)
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        gateway.stderr.close()
    assert len(load.accepted()) > 50
    records = [r.value() for r in read_records(kafka_service.bootstrap, topic, timeout_s=30)]
    assert_every_202_written_once_or_as_copies(records, load)


def listeners_of(port: int) -> set[int]:
    """PIDs of the processes with a socket listening on 127.0.0.1:`port` (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":     # LISTEN
            inodes.add(fields[9])
    pids = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = {os.readlink(fd) for fd in fd_dir.iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.add(int(fd_dir.parent.name))
    return pids


def test_workers_share_the_port_each_write_and_all_stop_on_sigterm(kafka_service: Kafka,
                                                                   tmp_path: Path) -> None:
    """`--workers 3`: three processes listen on one port, pushes on new connections are
    all accepted and written, and a SIGTERM to the first process stops every one."""
    gateway, port, topic = start_gateway(kafka_service, tmp_path, "--workers", "3")
    try:
        deadline = time.monotonic() + 90
        while len(listeners := listeners_of(port)) < 3:
            assert gateway.poll() is None, gateway.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"listeners: {listeners}"
            time.sleep(0.2)
        bodies = [f"push {n}".encode() for n in range(60)]
        for body in bodies:                         # a new connection each: spread by the kernel
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/v1/push/mercedes", body,
                         {"Authorization": f"Bearer {TOKEN}"})
            assert conn.getresponse().status == 202
            conn.close()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
        deadline = time.monotonic() + 20
        while listeners_of(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listeners_of(port) == set(), "a worker outlived the first process"
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        gateway.stderr.close()
    records = [r.value() for r in read_records(kafka_service.bootstrap, topic, timeout_s=30)]
    assert sorted(records) == sorted(bodies)
