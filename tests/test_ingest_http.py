"""HTTP push (DATA-CONTRACTS §8) against the local Kafka: 202 only after the write, every
refusal writes nothing, and the listener keeps serving after any bad request."""
from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from fleetstream.dev.kafka import Kafka
from tests.helpers import free_port
from tests.ingest_http_harness import SECRET, TOKEN, Gateway, settings, sign

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

VIN = "WDD2050041R123456"
PAYLOAD = b'{"vin": "WDD2050041R123456", "data": [1, 2, 3]}'


@pytest.fixture
def gateway(kafka_service: Kafka) -> Iterator[Gateway]:
    with Gateway(settings(kafka_service.bootstrap)) as running:
        yield running


def signed(body: bytes) -> dict[str, str]:
    return {"SC-Signature": sign(body)}


def assert_still_serving(gateway: Gateway) -> None:
    status, _, _ = gateway.post("/v1/push/mercedes", b"still here",
                                {"Authorization": f"Bearer {TOKEN}"})
    assert status == 202


def test_a_signed_push_is_written_untouched_keyed_by_the_path_vin(gateway: Gateway) -> None:
    before = time.time() * 1000
    status, _, _ = gateway.post(f"/v1/push/smartcar/{VIN}", PAYLOAD, signed(PAYLOAD))
    after = time.time() * 1000
    assert status == 202
    [record] = gateway.records("smartcar")
    assert record.value() == PAYLOAD and record.key() == VIN.encode()
    assert before - 5 <= record.timestamp()[1] <= after + 5
    exposition = gateway.metrics.exposition().decode()
    assert 'fleetstream_ingest_requests_total{code="202",source="smartcar"} 1.0' in exposition
    assert 'fleetstream_ingest_records_total{source="smartcar",via="push"} 1.0' in exposition
    assert "fleetstream_ingest_produce_latency_seconds_count 1.0" in exposition


def test_without_a_vin_in_the_path_the_record_has_no_key(gateway: Gateway) -> None:
    body = bytes(range(256))   # any bytes, not only JSON
    assert gateway.post("/v1/push/smartcar", body, signed(body))[0] == 202
    [record] = gateway.records("smartcar")
    assert record.value() == body and record.key() is None


@pytest.mark.parametrize("headers", [
    {}, {"SC-Signature": ""}, {"SC-Signature": "00" * 32},
    {"SC-Signature": sign(PAYLOAD, "another-secret")},        # forged with a guessed key
    {"SC-Signature": sign(PAYLOAD + b" ")},                    # signature of another body
    {"SC-Signature": "é" * 64}, {"X-Signature": sign(PAYLOAD)}])
def test_a_missing_or_wrong_signature_is_401_and_writes_nothing(
        gateway: Gateway, headers: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    status, _, answer = gateway.post(f"/v1/push/smartcar/{VIN}", PAYLOAD, headers)
    assert status == 401
    assert_still_serving(gateway)
    assert gateway.records("smartcar") == []
    logged = caplog.text + answer.decode()
    assert "push to smartcar refused (401)" in caplog.text
    assert SECRET not in logged and TOKEN not in logged and sign(PAYLOAD) not in logged


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}",
                                           f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"])
def test_a_missing_or_wrong_bearer_token_is_401_and_writes_nothing(
        gateway: Gateway, authorization: str | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {} if authorization is None else {"Authorization": authorization}
    status, _, answer = gateway.post("/v1/push/mercedes/VIN1", PAYLOAD, headers)
    assert status == 401
    assert gateway.records("mercedes") == []
    assert TOKEN not in caplog.text + answer.decode()
    assert_still_serving(gateway)


def test_unknown_sources_and_sources_without_push_are_404(gateway: Gateway) -> None:
    for path in ("/v1/push/volvo", "/v1/push/bmw", "/v1/push/volvo/VIN1", "/v1/push/",
                 "/v1/push/smartcar/not%20a%20vin", "/v2/push/smartcar"):
        assert gateway.post(path, PAYLOAD, signed(PAYLOAD))[0] == 404, path
    assert 'source="unknown"' in gateway.metrics.exposition().decode()
    assert gateway.records("bmw") == [] and gateway.records("smartcar") == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_methods_other_than_post_are_405(gateway: Gateway, method: str) -> None:
    status, headers, _ = gateway.post(f"/v1/push/smartcar/{VIN}", PAYLOAD, signed(PAYLOAD),
                                      method=method)
    assert status == 405 and headers["Allow"] == "POST"
    assert gateway.records("smartcar") == []


def test_a_body_over_the_limit_is_413_by_its_content_length_or_as_it_streams(
        gateway: Gateway) -> None:
    limit = gateway.settings.http.max_body_bytes
    big = b"x" * (limit + 1)
    assert gateway.post("/v1/push/smartcar", big, signed(big))[0] == 413
    conn = gateway.connection()   # chunked, no Content-Length: cut off at the limit
    conn.request("POST", "/v1/push/smartcar", body=iter([b"x" * 1000] * 10),
                 headers=signed(big))    # an iterable body goes chunked
    assert conn.getresponse().status == 413
    conn.close()
    exact = b"y" * limit
    assert gateway.post("/v1/push/smartcar", exact, signed(exact))[0] == 202
    assert [r.value() for r in gateway.records("smartcar")] == [exact]


def test_a_body_of_the_contract_s_default_limit_1_mib_is_written_whole(kafka_service) -> None:
    """librdkafka's own default (1,000,000 bytes) is below 1 MiB: the writer and the topics
    it creates take the gateway's limit plus a record's overhead."""
    with Gateway(settings(kafka_service.bootstrap, {"max_body_bytes": 1_048_576})) as gateway:
        exact = b"z" * 1_048_576
        assert gateway.post("/v1/push/smartcar", exact, signed(exact))[0] == 202
        assert [r.value() for r in gateway.records("smartcar")] == [exact]


def test_a_chunked_body_within_the_limit_is_accepted(gateway: Gateway) -> None:
    parts = [b'{"a": ', b"1", b"}"]
    conn = gateway.connection()
    conn.request("POST", f"/v1/push/smartcar/{VIN}", body=iter(parts),
                 headers=signed(b"".join(parts)))
    assert conn.getresponse().status == 202
    assert [r.value() for r in gateway.records("smartcar")] == [b"".join(parts)]


def test_verify_is_answered_with_the_hmac_of_the_challenge_and_not_written(
        gateway: Gateway) -> None:
    body = orjson.dumps({"eventType": "VERIFY", "data": {"challenge": "abc-123"}})
    status, _, answer = gateway.post("/v1/push/smartcar", body, signed(body))
    assert status == 200
    expected = hmac.new(SECRET.encode(), b"abc-123", hashlib.sha256).hexdigest()
    assert orjson.loads(answer) == {"challenge": expected}
    assert gateway.post("/v1/push/smartcar", body, {"SC-Signature": "0" * 64})[0] == 401
    for malformed in ({"eventType": "VERIFY"}, {"eventType": "VERIFY", "data": "x"},
                      {"eventType": "VERIFY", "data": {"challenge": 5}}):
        body = orjson.dumps(malformed)
        assert gateway.post("/v1/push/smartcar", body, signed(body))[0] == 400
    assert gateway.records("smartcar") == []
    # a payload that only mentions VERIFY, or is not JSON, is a payload like any other
    normal = [orjson.dumps({"eventType": "DATA", "note": "VERIFY"}), b'{"VERIFY" broken']
    for body in normal:
        assert gateway.post("/v1/push/smartcar", body, signed(body))[0] == 202
    assert sorted(r.value() for r in gateway.records("smartcar")) == sorted(normal)


def test_a_trickled_body_times_out_and_others_are_served_meanwhile(gateway: Gateway) -> None:
    slow = socket.create_connection(("127.0.0.1", gateway.port))
    slow.sendall(f"POST /v1/push/smartcar HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                 f"SC-Signature: {'0' * 64}\r\n\r\n".encode())
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            try:
                slow.sendall(b"x")
            except OSError:
                return
            time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        assert_still_serving(gateway)
        slow.settimeout(5)
        answer = slow.recv(1000)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        slow.close()
    assert gateway.records("smartcar") == []
    assert_still_serving(gateway)


def raw_exchange(port: int, request: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := conn.recv(4096):
                answer += chunk
        except TimeoutError:
            pass
        return answer


def test_a_wrong_content_length_writes_nothing(gateway: Gateway) -> None:
    head = f"POST /v1/push/smartcar/{VIN} HTTP/1.1\r\nHost: x\r\nSC-Signature: {sign(PAYLOAD)}\r\n"
    # longer than the body, then the sender stops: cut short (400) or times out (408)
    answer = raw_exchange(gateway.port, f"{head}Content-Length: {len(PAYLOAD) + 10}\r\n\r\n"
                          .encode() + PAYLOAD, half_close=True)
    assert answer == b"" or answer.split(b" ")[1] in (b"400", b"408"), answer
    # shorter: the signature no longer matches (401), and the rest is no valid request (400)
    answer = raw_exchange(gateway.port, f"{head}Content-Length: 10\r\n\r\n".encode() + PAYLOAD)
    assert answer.split(b" ")[1] in (b"400", b"401"), answer
    assert b" 202 " not in answer
    # not a number
    answer = raw_exchange(gateway.port, f"{head}Content-Length: ten\r\n\r\n".encode() + PAYLOAD)
    assert answer.split(b" ")[1] == b"400", answer
    assert gateway.records("smartcar") == []
    assert_still_serving(gateway)


def test_healthz_and_metrics(gateway: Gateway) -> None:
    status, _, body = gateway.post("/healthz", b"", method="GET")
    assert (status, body) == (200, b"ok")
    gateway.post("/v1/push/volvo", b"x")
    status, headers, body = gateway.post("/metrics", b"", method="GET")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b'fleetstream_ingest_requests_total{code="404",source="unknown"} 1.0' in body


def test_healthz_and_pushes_are_503_while_kafka_is_unreachable() -> None:
    with Gateway(settings(f"127.0.0.1:{free_port()}"), writer_timeout_s=1.0,
                 create_topics=False) as gateway:
        assert gateway.post("/healthz", b"", method="GET")[0] == 503
        status, headers, _ = gateway.post("/v1/push/mercedes", b"x",
                                          {"Authorization": f"Bearer {TOKEN}"})
        assert status == 503 and headers["Retry-After"] == "5"


# --- mutual TLS -----------------------------------------------------------------------------

def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, the server's certificate and three clients: fleet-gw (may push to smartcar),
    stranger (a CN not mapped) and rogue (fleet-gw's CN, signed by another CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    paths: dict[str, Path] = {}

    def issue(name: str, cn: str, issuer: tuple | None, ca: bool = False) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer[0].subject if issuer else subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if name == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}-key"] = folder / f"{name}-key.pem"
        paths[f"{name}-key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return cert, key

    ca = issue("ca", "FleetStream test CA", None, ca=True)
    other_ca = issue("other-ca", "Someone else's CA", None, ca=True)
    issue("server", "127.0.0.1", ca)
    issue("fleet-gw", "fleet-gw", ca)
    issue("stranger", "stranger", ca)
    issue("rogue", "fleet-gw", other_ca)
    return paths


def test_mutual_tls_maps_the_client_certificate_cn_to_its_sources(
        kafka_service: Kafka, tmp_path: Path) -> None:
    pem = _certificates(tmp_path)
    tls = {"cert": str(pem["server"]), "key": str(pem["server-key"]),
           "client_ca": str(pem["ca"]), "subjects": {"fleet-gw": ["smartcar"]}}
    with Gateway(settings(kafka_service.bootstrap, {"tls": tls})) as gateway:
        def push(client: str | None, source: str = "smartcar") -> int:
            context = ssl.create_default_context(cafile=str(pem["ca"]))
            if client:
                context.load_cert_chain(pem[client], pem[f"{client}-key"])
            conn = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=context,
                                               timeout=5)
            headers = {**signed(PAYLOAD), "Authorization": f"Bearer {TOKEN}"}
            try:
                conn.request("POST", f"/v1/push/{source}/{VIN}", body=PAYLOAD, headers=headers)
                return conn.getresponse().status
            except (ssl.SSLError, ConnectionError, http.client.HTTPException):
                return 0   # the handshake was refused
            finally:
                conn.close()

        assert push("fleet-gw") == 202
        assert push("fleet-gw", "mercedes") == 403   # a source not listed for its CN
        assert push("stranger") == 403               # a CN not mapped at all
        assert push("rogue") == 0                    # signed by another CA
        assert push(None) == 0                       # no certificate
        assert [r.value() for r in gateway.records("smartcar")] == [PAYLOAD]
        assert gateway.records("mercedes") == []


# --- fuzz -----------------------------------------------------------------------------------

_header_names = st.sampled_from(["SC-Signature", "Authorization", "Content-Type", "X-Any",
                                 "Content-Encoding", "Expect"])
_header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@pytest.fixture(scope="module")
def fuzzed(kafka_service: Kafka) -> Iterator[tuple[Gateway, list[bytes]]]:
    with Gateway(settings(kafka_service.bootstrap)) as gateway:
        accepted: list[bytes] = []
        yield gateway, accepted
        assert sorted(r.value() for r in gateway.records("smartcar")) == sorted(accepted)
        assert gateway.records("mercedes") == []


@hypothesis_settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=5000),
                      st.builds(lambda c: orjson.dumps({"eventType": "VERIFY", "data": c}),
                                st.one_of(st.none(), st.text(max_size=20),
                                          st.dictionaries(st.text(max_size=10),
                                                          st.integers(-2**60, 2**60) | st.text(max_size=5))))),
       headers=st.dictionaries(_header_names, _header_values, max_size=4),
       sign_it=st.booleans(), source=st.sampled_from(["smartcar", "mercedes", "volvo"]),
       vin=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                          min_size=1, max_size=20)))
def test_fuzzed_pushes_never_5xx_and_never_write_without_202(
        fuzzed: tuple[Gateway, list[bytes]], body: bytes, headers: dict[str, str],
        sign_it: bool, source: str, vin: str | None) -> None:
    gateway, accepted = fuzzed
    if sign_it:
        headers = {**headers, "SC-Signature": sign(body)}
    headers.pop("Expect", None)   # http.client does not do 100-continue
    path = f"/v1/push/{source}" + (f"/{quote(vin)}" if vin else "")
    try:
        status, _, _ = gateway.post(path, body, headers)
    except (ConnectionError, http.client.HTTPException):
        return   # the server closed a connection it would not read (e.g. a bad header)
    assert status < 500 or status == 503, status
    assert status in (200, 202, 400, 401, 404, 413, 415), status
    if status == 202:
        assert source == "smartcar" and sign_it
        accepted.append(body)


# --- the listener's own HTTP handling (fleetstream/ingest/http_server.py) ---------------------

def test_pipelined_requests_are_answered_in_order_on_one_connection(gateway: Gateway) -> None:
    bodies = [f'{{"n": {n}}}'.encode() for n in range(5)]
    pushes = [f"POST /v1/push/smartcar/{VIN} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(b)}\r\n"
              f"SC-Signature: {sign(b)}\r\n\r\n".encode() + b for b in bodies]
    refused = b"POST /v1/push/volvo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(gateway.port, b"".join([*pushes[:2], refused, *pushes[2:], last]))
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)   # bodies end without a newline
    assert statuses == [b"202", b"202", b"404", b"202", b"202", b"202", b"200"], answer
    assert answer.endswith(b"ok")
    assert [r.value() for r in gateway.records("smartcar")] == bodies


def test_expect_100_continue_is_answered_before_the_body_or_refused_at_once(
        gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as conn:
        conn.sendall(f"POST /v1/push/smartcar HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     f"Content-Length: {len(PAYLOAD)}\r\nSC-Signature: {sign(PAYLOAD)}\r\n\r\n"
                     .encode())
        assert conn.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(PAYLOAD)
        assert conn.recv(1000).startswith(b"HTTP/1.1 202 ")
    # refused by its head: the answer comes without the body and the connection closes
    answer = raw_exchange(gateway.port, b"POST /v1/push/mercedes HTTP/1.1\r\nHost: x\r\n"
                                        b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401 ") and b"Connection: close" in answer, answer
    assert [r.value() for r in gateway.records("smartcar")] == [PAYLOAD]
    assert gateway.records("mercedes") == []


def test_an_endless_request_head_is_431_and_closed(gateway: Gateway) -> None:
    head = b"POST /v1/push/smartcar HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000
    answer = raw_exchange(gateway.port, head + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert_still_serving(gateway)
