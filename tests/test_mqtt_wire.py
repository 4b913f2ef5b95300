"""The MQTT 3.1.1 publisher of the mqtt sink: packet encoding and decoding, and the client
against a scripted broker on a local socket (refusals, stray acknowledgements, silence)."""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetstream.io.sinks.mqtt_wire import (
    MAX_IN_FLIGHT, MAX_REMAINING_LENGTH, MqttRefused, MqttTimeout, MqttWireError, Publisher,
    connect_packet, decode_remaining_length, encode_remaining_length, next_packet_id,
    publish_packets, read_packets)

lengths = st.integers(0, MAX_REMAINING_LENGTH)


@given(lengths, st.binary(max_size=8))
def test_remaining_length_round_trips(length, after):
    encoded = encode_remaining_length(length)
    assert 1 <= len(encoded) <= 4
    assert decode_remaining_length(b"\x30" + encoded + after, 1) == (length, 1 + len(encoded))


@given(lengths)
def test_a_truncated_remaining_length_is_incomplete(length):
    encoded = encode_remaining_length(length)
    for end in range(len(encoded)):
        assert decode_remaining_length(encoded[:end], 0) is None


@pytest.mark.parametrize("length, encoded", [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"), (2_097_152, b"\x80\x80\x80\x01"),
    (MAX_REMAINING_LENGTH, b"\xff\xff\xff\x7f")])
def test_remaining_length_matches_the_specs_table(length, encoded):   # MQTT 3.1.1 §2.2.3
    assert encode_remaining_length(length) == encoded


def test_remaining_length_out_of_range_is_refused():
    with pytest.raises(ValueError, match="268435455"):
        encode_remaining_length(MAX_REMAINING_LENGTH + 1)
    with pytest.raises(MqttWireError, match="more than four bytes"):
        decode_remaining_length(b"\xff\xff\xff\xff\x01", 0)


packets = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=20)


@given(packets, st.data())
def test_packets_split_anywhere_are_read_whole_and_in_order(sent, data):
    stream = b"".join(bytes((kind,)) + encode_remaining_length(len(body)) + body
                      for kind, body in sent)
    cut = data.draw(st.integers(0, len(stream)))
    first, used = read_packets(stream[:cut])
    rest, used_rest = read_packets(stream[used:])
    assert first + rest == sent
    assert used + used_rest == len(stream)


@given(st.integers(1, MAX_IN_FLIGHT), st.integers(1, 1000))
def test_packet_ids_wrap_and_are_never_zero(start, steps):
    packet_id = start
    for _ in range(steps):
        packet_id = next_packet_id(packet_id)
        assert 1 <= packet_id <= MAX_IN_FLIGHT
    assert next_packet_id(MAX_IN_FLIGHT) == 1


def test_a_full_window_of_packet_ids_is_distinct():
    _, ids = publish_packets([("t", b"")] * MAX_IN_FLIGHT, 1, first_id=65_000)
    assert len(set(ids)) == MAX_IN_FLIGHT and 0 not in ids
    assert ids[:3] == [65_000, 65_001, 65_002] and ids[535:538] == [65_535, 1, 2]


def test_publish_packets_as_the_spec_lays_them_out():   # MQTT 3.1.1 §3.3
    data, ids = publish_packets([("a/b", b"xy"), ("a/c", b"")], 1, first_id=10)
    assert ids == [10, 11]
    assert data == (b"\x32\x09\x00\x03a/b\x00\x0axy"
                    b"\x32\x07\x00\x03a/c\x00\x0b")
    data, ids = publish_packets([("a/b", b"xy")], 0, first_id=10)
    assert (data, ids) == (b"\x30\x07\x00\x03a/bxy", [])
    data, _ = publish_packets([("ü", b"")], 2, first_id=1)
    assert data == b"\x34\x06\x00\x02\xc3\xbc\x00\x01"


@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), st.binary(max_size=400)),
                max_size=30), st.sampled_from([0, 1, 2]), st.integers(1, MAX_IN_FLIGHT))
def test_publish_packets_decode_back_to_the_messages(messages, qos, first_id):
    data, ids = publish_packets(messages, qos, first_id)
    decoded, used = read_packets(data)
    assert used == len(data) and len(decoded) == len(messages)
    got_ids = []
    for (kind, body), (topic, payload) in zip(decoded, messages):
        assert kind == 0x30 | qos << 1
        size = int.from_bytes(body[:2], "big")
        assert body[2:2 + size].decode() == topic
        if qos:
            got_ids.append(int.from_bytes(body[2 + size:4 + size], "big"))
            size += 2
        assert body[2 + size:] == payload
    assert got_ids == ids


def test_connect_packet_carries_the_login_and_a_clean_session():   # MQTT 3.1.1 §3.1
    assert connect_packet("c1", 30, "user", "pw") == (
        b"\x10\x18\x00\x04MQTT\x04\xc2\x00\x1e\x00\x02c1\x00\x04user\x00\x02pw")
    assert connect_packet("c1", 30) == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x1e\x00\x02c1"


# --- the client against a scripted broker ------------------------------------------

Script = Callable[[socket.socket], None]


def read_packet(conn: socket.socket) -> tuple[int, bytes]:
    """One whole packet from the client."""
    data = b""
    while True:
        found, _ = read_packets(data)
        if found:
            return found[0]
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError
        data += chunk


def read_publishes(conn: socket.socket, count: int) -> list[tuple[int, bytes]]:
    data, got = b"", []
    while len(got) < count:
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise EOFError
        data += chunk
        found, used = read_packets(data)
        data = data[used:]
        got += found
    return got


def packet_id(publish: tuple[int, bytes]) -> bytes:
    body = publish[1]
    size = int.from_bytes(body[:2], "big")
    return body[2 + size:4 + size]


class ScriptedBroker:
    """Accepts one connection on 127.0.0.1 and runs `script` on it in a thread."""

    def __init__(self, script: Script) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[tuple[int, bytes]] = []
        self.thread = threading.Thread(target=self._serve, args=(script,), daemon=True)
        self.thread.start()

    def _serve(self, script: Script) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.received.append(read_packet(conn))
            try:
                script(conn)
            except (EOFError, OSError):
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def broker():
    made: list[ScriptedBroker] = []

    def make(script: Script) -> ScriptedBroker:
        made.append(ScriptedBroker(script))
        return made[-1]

    yield make
    for each in made:
        each.close()


def publisher(port: int, **kwargs) -> Publisher:
    return Publisher("127.0.0.1", port, client_id="test", keepalive_s=0, **kwargs)


def accept(conn: socket.socket) -> None:
    conn.sendall(b"\x20\x02\x00\x00")


def test_refusal_names_the_reason(broker):
    scripted = broker(lambda conn: conn.sendall(b"\x20\x02\x00\x05"))
    client = publisher(scripted.port, username="u", password="p")
    with pytest.raises(MqttRefused, match="Not authorized"):
        client.connect(time.monotonic() + 2)
    assert not client.connected
    scripted.thread.join(2)
    assert scripted.received == [(0x10, connect_packet("test", 0, "u", "p")[2:])]


def test_acknowledgements_in_any_order_are_matched_by_packet_id(broker):
    def script(conn: socket.socket) -> None:
        accept(conn)
        publishes = read_publishes(conn, 3)
        for publish in reversed(publishes):   # the wrong order, one segment each
            conn.sendall(b"\x40\x02" + packet_id(publish))
        time.sleep(0.5)

    client = publisher(broker(script).port)
    client.connect(time.monotonic() + 2)
    client.publish([("t", b"1"), ("t", b"2"), ("t", b"3")], 1, time.monotonic() + 2)
    assert client.healthy()
    client.close()


def test_qos2_answers_each_pubrec_with_pubrel_and_waits_for_pubcomp(broker):
    releases: list[tuple[int, bytes]] = []

    def script(conn: socket.socket) -> None:
        accept(conn)
        publishes = read_publishes(conn, 2)
        conn.sendall(b"".join(b"\x50\x02" + packet_id(p) for p in publishes))
        releases.extend(read_publishes(conn, 2))
        conn.sendall(b"".join(b"\x70\x02" + packet_id(p) for p in publishes))
        time.sleep(0.5)

    client = publisher(broker(script).port)
    client.connect(time.monotonic() + 2)
    client.publish([("t", b"1"), ("t", b"2")], 2, time.monotonic() + 2)
    assert releases == [(0x62, b"\x00\x01"), (0x62, b"\x00\x02")]
    client.close()


@pytest.mark.parametrize("reply, message", [
    (b"\x40\x02\x00\x09", "packet id 9, not in flight"),
    (b"\x50\x02\x00\x01", "unexpected packet type 5 while publishing QoS 1"),
    (b"\x40\xff\xff\xff\xff\x01", "more than four bytes"),
])
def test_a_broker_breaking_the_protocol_fails_the_publish(broker, reply, message):
    def script(conn: socket.socket) -> None:
        accept(conn)
        read_publishes(conn, 1)
        conn.sendall(reply)
        time.sleep(0.5)

    client = publisher(broker(script).port)
    client.connect(time.monotonic() + 2)
    with pytest.raises(MqttWireError, match=message):
        client.publish([("t", b"1")], 1, time.monotonic() + 2)
    assert not client.connected


def test_a_silent_broker_times_out_at_the_deadline(broker):
    def script(conn: socket.socket) -> None:
        accept(conn)
        read_publishes(conn, 1)
        time.sleep(3)

    client = publisher(broker(script).port)
    client.connect(time.monotonic() + 2)
    started = time.monotonic()
    with pytest.raises(MqttTimeout):
        client.publish([("t", b"1")], 1, started + 0.5)
    assert 0.5 <= time.monotonic() - started < 1.5
    assert not client.connected


def test_a_broker_silent_on_connect_times_out(broker):
    scripted = broker(lambda conn: time.sleep(3))
    started = time.monotonic()
    with pytest.raises(MqttTimeout):
        publisher(scripted.port).connect(started + 0.5)
    assert time.monotonic() - started < 1.5


def test_a_connection_closed_mid_publish_fails_it(broker):
    def script(conn: socket.socket) -> None:
        accept(conn)
        publishes = read_publishes(conn, 2)
        conn.sendall(b"\x40\x02" + packet_id(publishes[0]))   # one of two, then gone

    client = publisher(broker(script).port)
    client.connect(time.monotonic() + 2)
    with pytest.raises(MqttWireError, match="closed by the broker"):
        client.publish([("t", b"1"), ("t", b"2")], 1, time.monotonic() + 5)
    assert not client.connected


def test_a_connection_closed_while_idle_is_found_before_sending(broker):
    def script(conn: socket.socket) -> None:
        accept(conn)

    scripted = broker(script)
    client = publisher(scripted.port)
    client.connect(time.monotonic() + 2)
    scripted.thread.join(2)
    time.sleep(0.1)
    assert not client.healthy() and not client.connected


def test_nothing_listening_is_not_reachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MqttWireError, match="refused"):
        publisher(port).connect(time.monotonic() + 2)
