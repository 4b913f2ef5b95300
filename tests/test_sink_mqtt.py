"""MqttSink and the broker's logins against a real Mosquitto."""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import threading
import time

import orjson
import paho.mqtt.client as mqtt
import pytest

from fleetstream.dev.mosquitto import MosquittoService
from fleetstream.dev.mqtt_acl import broker_auth, write_broker_auth
from fleetstream.io.sinks.mqtt import MqttDeliveryError, MqttSink
from fleetstream.io.sinks.mqtt_wire import Publisher, connect_packet
from fleetstream.io.sinks.registry import application_sink, build_sink
from fleetstream.schemas.errors import ConfigError
from fleetstream.settings.config import parse_config
from tests.helpers import free_port

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]

PUBLISHER = {"username": "pipeline", "password": "publisher-secret"}
SUBSCRIBER_PASSWORDS = {"fleet-a": "secret-a", "insurer-b": "secret-b"}


class Subscriber:
    """An MQTT client that records what arrives on its subscriptions."""

    def __init__(self, port: int, topic: str, login: tuple[str, str] | None = None) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.granted: list = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if login:
            self.client.username_pw_set(*login)
        self.client.on_message = lambda client, userdata, message: self.messages.append(message)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            self.granted = reason_codes
            subscribed.set()

        self.client.on_subscribe = on_subscribe
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK"

    def received(self, count: int, within_s: float = 3.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + within_s
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def subscribed(port: int, topic: str, login: tuple[str, str] | None = None):
    subscriber = Subscriber(port, topic, login)
    try:
        yield subscriber
    finally:
        subscriber.close()


@contextlib.contextmanager
def opened(sink: MqttSink):
    sink.open()
    try:
        yield sink
    finally:
        sink.close()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publishes_each_document_on_its_vehicle_topic(mosquitto_service, make_batch, qos):
    batch = make_batch(vins=("V1", "V2"), per_vehicle=3)
    sink = MqttSink("fleet-a", {"host": "127.0.0.1", "port": mosquitto_service.port, "qos": qos,
                                "topic": "live/fleetstream/{application_id}/{vin}"})
    with subscribed(mosquitto_service.port, "live/fleetstream/fleet-a/#") as subscriber, \
            opened(sink):
        sink.write(batch)
        messages = subscriber.received(len(batch.records))
    for vin in ("V1", "V2"):
        assert [m.payload for m in messages if m.topic == f"live/fleetstream/fleet-a/{vin}"] \
            == [r.document for r in batch.records if r.vin == vin]
    assert len(messages) == len(batch.records)


@pytest.mark.parametrize("topic", ["live/fleetstream/{application_id}/{vin}",
                                   "live/fleetstream/{application_id}"])
def test_a_whole_batch_in_flight_keeps_each_vehicles_order(mosquitto_service, make_batch, topic):
    # 900: under Mosquitto's default max_queued_messages (1,000) for the subscriber
    batch = make_batch(vins=[f"V{n:02d}" for n in range(25)], per_vehicle=36)
    sink = MqttSink("fleet-a", {"host": "127.0.0.1", "port": mosquitto_service.port, "qos": 1,
                                "topic": topic})
    with subscribed(mosquitto_service.port, "live/fleetstream/fleet-a/#") as subscriber, \
            opened(sink):   # "a/#" matches "a" too
        sink.write(batch)
        messages = subscriber.received(len(batch.records), 10)
    assert len(messages) == len(batch.records)
    arrived = [orjson.loads(m.payload) for m in messages]
    for vin in {r.vin for r in batch.records}:
        assert [d["message_id"] for d in arrived if d["vin"] == vin] == \
            [r.message_id for r in batch.records if r.vin == vin]


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test's own, to fill up, freeze or stop."""
    broker = MosquittoService(free_port(), name="mosquitto-own", root=tmp_path)
    broker.start()
    yield broker
    pid = broker.pid()
    if pid is not None:   # a broker frozen by the test: let it see its TERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)
    broker.stop()


@pytest.mark.servers
def test_a_large_batch_arrives_complete_and_in_order_per_vehicle(own_broker, make_batch):
    batch = make_batch(vins=[f"V{n:03d}" for n in range(100)], per_vehicle=100)
    sink = MqttSink("fleet-a", {"host": "127.0.0.1", "port": own_broker.port, "qos": 1,
                                "topic": "live/fleetstream/{application_id}/{vin}"})
    with subscribed(own_broker.port, "live/fleetstream/fleet-a/#") as subscriber, \
            opened(sink):
        sink.write(batch)
        messages = subscriber.received(len(batch.records), 60)
    assert len(messages) == len(batch.records) == 10_000
    arrived = [orjson.loads(m.payload) for m in messages]
    for vin in {r.vin for r in batch.records}:
        assert [d["message_id"] for d in arrived if d["vin"] == vin] == \
            [r.message_id for r in batch.records if r.vin == vin]


@pytest.mark.servers
@pytest.mark.parametrize("stop", ["terminated", "frozen"])
def test_a_broker_stopped_mid_write_fails_the_write_within_the_timeout(own_broker, make_batch,
                                                                       stop):
    timeout = 3
    sink = MqttSink("fleet-a", {"host": "127.0.0.1", "port": own_broker.port,
                                "topic": "live/{application_id}/{vin}", "timeout": timeout})
    # about 20 MB: more than the loopback socket buffers hold, so the write is mid-send
    large = make_batch(vins=[f"V{n:03d}" for n in range(100)], per_vehicle=100, data_bytes=2000)
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            sink.write(large)
            outcome.append(None)
        except BaseException as error:   # noqa: BLE001 - handed to the test's thread
            outcome.append(error)

    with opened(sink):
        sink.write(make_batch())   # connected
        pid = own_broker.pid()
        os.killpg(pid, signal.SIGSTOP)
        started = time.monotonic()
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        time.sleep(0.5)
        assert writer.is_alive(), "the write ended while the broker was frozen"
        if stop == "terminated":
            os.killpg(pid, signal.SIGTERM)
            os.killpg(pid, signal.SIGCONT)
        writer.join(timeout + 2)
        took = time.monotonic() - started
    assert not writer.is_alive(), "the write hangs past the sink's timeout"
    assert isinstance(outcome[0], MqttDeliveryError), outcome
    if stop == "frozen":
        assert timeout <= took < timeout + 1.5
        assert "did not acknowledge 10000 message(s)" in str(outcome[0])
    else:
        assert took < timeout


@pytest.mark.servers
def test_pings_keep_an_idle_connection_open(mosquitto_service):
    keepalive_s = 1
    publisher = Publisher("127.0.0.1", mosquitto_service.port, client_id="fleetstream-ping-test",
                          keepalive_s=keepalive_s)
    publisher.connect(time.monotonic() + 5)
    try:
        # beside it, a connection with the same keep-alive that sends nothing more is closed
        # by the broker (Mosquitto 2.0 checks keep-alives every few seconds: 4-6 s here) ...
        with socket.create_connection(("127.0.0.1", mosquitto_service.port),
                                      timeout=15) as silent:
            silent.sendall(connect_packet("fleetstream-silent-test", keepalive_s))
            assert silent.recv(4) == b"\x20\x02\x00\x00"
            assert silent.recv(4) == b""
        time.sleep(2 * keepalive_s)
        # ... while the publisher's PINGREQs kept its own open all along
        assert publisher.healthy()
        publisher.publish([("live/ping-test", b"{}")], 1, time.monotonic() + 5)
    finally:
        publisher.close()


def write_certificates(folder) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 (no host name) and a client certificate, as
    PEM files in `folder`; their paths by name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetstream test CA")])

    def certificate(name, key, issuer, issuer_key, *, ca=False, addresses=()):
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if addresses:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]), critical=False)
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
        return builder.sign(issuer_key, hashes.SHA256())

    paths = {}

    def save(stem, cert, key=None):
        paths[stem] = str(folder / f"{stem}.pem")
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            paths[f"{stem}_key"] = str(folder / f"{stem}.key")
            (folder / f"{stem}.key").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))

    save("ca", certificate(ca_name, ca_key, ca_name, ca_key, ca=True))
    for stem, addresses in (("server", ("127.0.0.1",)), ("client", ())):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fleetstream {stem}")])
        save(stem, certificate(name, key, ca_name, ca_key, addresses=addresses), key)
    return paths


class TlsMosquitto(MosquittoService):
    """A broker whose one listener speaks TLS and requires a client certificate."""

    def __init__(self, port: int, certificates: dict[str, str], root) -> None:
        super().__init__(port, name="mosquitto-tls", root=root)
        self.certificates = certificates

    def prepare(self) -> None:
        super().prepare()
        with self.config_path.open("a") as config:
            config.write(f"cafile {self.certificates['ca']}\n"
                         f"certfile {self.certificates['server']}\n"
                         f"keyfile {self.certificates['server_key']}\n"
                         "require_certificate true\n")


@pytest.fixture
def tls_broker(tmp_path):
    certificates = write_certificates(tmp_path)
    broker = TlsMosquitto(free_port(), certificates, tmp_path)
    broker.start()
    yield broker, certificates
    broker.stop()


@pytest.mark.servers
def test_tls_with_a_client_certificate_is_acknowledged(tls_broker, make_batch):
    broker, certificates = tls_broker
    tls = {"ca_certs": certificates["ca"], "certfile": certificates["client"],
           "keyfile": certificates["client_key"]}
    with opened(MqttSink("fleet-a", {"host": "127.0.0.1", "port": broker.port, "tls": tls,
                                     "timeout": 5})) as sink:
        sink.write(make_batch(per_vehicle=50))   # QoS 1: returns once the broker acknowledged


@pytest.mark.servers
@pytest.mark.parametrize("host, tls, message", [
    ("127.0.0.1", True, "CERTIFICATE_VERIFY_FAILED"),        # system CAs: ours is unknown
    ("localhost", "client", "CERTIFICATE_VERIFY_FAILED"),    # the certificate names 127.0.0.1
    ("127.0.0.1", "ca only", "not reachable"),               # the broker wants a certificate
    ("127.0.0.1", False, "not reachable"),            # plain MQTT on a TLS listener
])
def test_tls_refuses_what_it_cannot_verify(tls_broker, make_batch, host, tls, message):
    broker, certificates = tls_broker
    options = {"ca only": {"ca_certs": certificates["ca"]},
               "client": {"ca_certs": certificates["ca"], "certfile": certificates["client"],
                          "keyfile": certificates["client_key"]}}.get(tls, tls)
    started = time.monotonic()
    with opened(MqttSink("fleet-a", {"host": host, "port": broker.port, "tls": options,
                                     "timeout": 3})) as sink, \
            pytest.raises(MqttDeliveryError, match=message):
        sink.write(make_batch())
    assert time.monotonic() - started < 3.5


def test_default_topic_is_the_applications(mosquitto_service, make_batch):
    batch = make_batch(application_id="insurer-b", per_vehicle=1)
    with subscribed(mosquitto_service.port, "live/fleetstream/insurer-b") as subscriber, \
            opened(MqttSink("insurer-b", {"port": mosquitto_service.port})) as sink:
        sink.write(batch)
        assert [m.payload for m in subscriber.received(2)] == [r.document for r in batch.records]


def secured_config(port: int):
    sink = {"type": "mqtt", "host": "127.0.0.1", "port": port, "timeout": 2, **PUBLISHER}
    return parse_config({"applications": [
        {"id": "fleet-a", "permissions": ["diagnostics.odometer"],
         "sink": {**sink, "topic": "live/fleetstream/{application_id}/{vin}"}},
        {"id": "insurer-b", "permissions": ["diagnostics.odometer"], "sink": sink},
    ]})


@pytest.fixture
def secured_broker(tmp_path, monkeypatch):
    """A broker of its own, with logins and ACLs from `secured_config`; its pid, log and
    data files live in the test's folder (pytest keeps the last few runs')."""
    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path / "home"))
    port = free_port()
    config = secured_config(port)
    password_file, acl_file = write_broker_auth(tmp_path, config.applications,
                                                SUBSCRIBER_PASSWORDS)
    broker = MosquittoService(port, name="mosquitto-secured",
                              password_file=password_file, acl_file=acl_file)
    broker.start()
    yield broker, config
    broker.stop()


def test_an_application_reads_only_its_own_topics(secured_broker, make_batch):
    broker, config = secured_broker
    batch = make_batch(application_id="insurer-b", per_vehicle=1)
    with subscribed(broker.port, "live/fleetstream/insurer-b/#",
                    ("fleet-a", SUBSCRIBER_PASSWORDS["fleet-a"])) as intruder, \
            subscribed(broker.port, "live/fleetstream/insurer-b/#",
                       ("insurer-b", SUBSCRIBER_PASSWORDS["insurer-b"])) as owner, \
            opened(application_sink(config.application("insurer-b"))) as sink:
        sink.write(batch)
        assert len(owner.received(2)) == 2
        time.sleep(0.3)
        assert intruder.messages == []
        # Mosquitto 2.0 grants the SUBACK and withholds the messages; later
        # versions refuse in the SUBACK. Either way nothing may arrive.
        assert all(code.value in (1, 0x80, 0x87) for code in intruder.granted)


def test_wrong_publisher_password_is_refused(secured_broker, make_batch):
    broker, _ = secured_broker
    sink = MqttSink("fleet-a", {"port": broker.port, "timeout": 1, "username": "pipeline",
                                "password": "wrong"})
    with opened(sink), pytest.raises(MqttDeliveryError, match="refused: Not authorized"):
        sink.write(make_batch())


def test_write_raises_while_the_broker_is_down_and_succeeds_after(secured_broker, make_batch):
    broker, config = secured_broker
    batch = make_batch(per_vehicle=1)
    with opened(application_sink(config.application("fleet-a"))) as sink:
        sink.write(batch)
        broker.stop()
        with pytest.raises(MqttDeliveryError):   # unreachable, or not acknowledged
            sink.write(batch)
        broker.start()
        with subscribed(broker.port, "live/fleetstream/fleet-a/#",
                        ("fleet-a", SUBSCRIBER_PASSWORDS["fleet-a"])) as subscriber:
            write_with_retries(sink, batch)
            assert len(subscriber.received(2)) >= 2


def write_with_retries(sink: MqttSink, batch, attempts: int = 5) -> None:
    """Retry as Deliver does: the client reconnects by itself within a few seconds."""
    for attempt in range(attempts):
        try:
            return sink.write(batch)
        except MqttDeliveryError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def test_broker_auth_files():
    passwords, acl = broker_auth(secured_config(1883).applications, SUBSCRIBER_PASSWORDS)
    assert sorted(line.split(":")[0] for line in passwords.splitlines()) == \
        ["fleet-a", "insurer-b", "pipeline"]
    assert "secret" not in passwords and all("$7$101$" in line for line in passwords.splitlines())
    assert acl == ("user pipeline\ntopic write #\n\n"
                   "user fleet-a\ntopic read live/fleetstream/fleet-a/#\n\n"
                   "user insurer-b\ntopic read live/fleetstream/insurer-b/#\n\n")


def test_broker_auth_refuses_overlapping_topics_and_unknown_subscribers():
    config = secured_config(1883)
    with pytest.raises(ConfigError, match=r"subscriber password for 'nobody'"):
        broker_auth(config.applications, {"nobody": "x"})
    clash = parse_config({"applications": [
        {"id": app, "permissions": ["diagnostics.odometer"],
         "sink": {"type": "mqtt", "topic": topic, **PUBLISHER}}
        for app, topic in (("a-1", "live/{application_id}"), ("a-2", "live/a-1/x"))]})
    with pytest.raises(ConfigError, match=r"applications\[a-2\]\.sink\.topic: .* overlap"):
        broker_auth(clash.applications, {})


@pytest.mark.parametrize("options, message", [
    ({"qos": 3}, r"\.qos: expected 0, 1 or 2"),
    ({"port": "1883"}, r"\.port: expected a whole number"),
    ({"topic": "live/{vehicle}"}, r"\.topic: 'live/\{vehicle\}' may use only"),
    ({"topic": "live/#"}, r"\.topic: 'live/#' must be a topic name"),
    ({"topic": "{vin}/x"}, r"\.topic: .* must begin with a level that is not"),
    ({"password": "p"}, r"\.password: needs username"),
    ({"tls": {"ca": "x"}}, r"\.tls: expected true, false or a mapping"),
    ({"timeout": 0}, r"\.timeout: expected seconds > 0"),
    ({"brokers": "x"}, r": unknown key\(s\) brokers"),
])
def test_config_errors_name_the_key(options, message):
    with pytest.raises(ConfigError, match=r"^applications\[fleet-a\]\.sink" + message):
        build_sink("fleet-a", {"type": "mqtt", **options})
