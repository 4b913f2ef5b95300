"""A minimal MQTT 3.1.1 publisher (QoS 0, 1 and 2): MqttSink's write path, without paho.

Why not paho-mqtt: its bookkeeping per message (an `MQTTMessageInfo` with a
`threading.Condition` for every publish; a `Properties` and a `ReasonCode`
object decoded for every PUBACK, on a second thread that contends for the GIL)
held one client to about 5,000-6,600 documents/s on this project's machines
(docs/benchmarks.md, issue #19). Here a whole batch of PUBLISH packets is built
with bytes joins and sent with `sendall`, and the broker's acknowledgements are
read in bulk on the caller's thread and matched by packet id.

- `Publisher.connect(deadline)` opens TCP (TLS when given an `ssl.SSLContext`),
  sends CONNECT (clean session, keep-alive, optional username and password) and
  reads CONNACK; a refusal raises `MqttRefused`.
- `Publisher.publish(messages, qos, deadline)` sends `(topic, payload)` pairs in
  their order on the one connection and returns once the broker has acknowledged
  each: PUBACK for QoS 1; PUBREC, answered with PUBREL, then PUBCOMP for QoS 2;
  QoS 0 returns once sent. At most 65,535 messages are in flight (the packet-id
  space); a larger list waits for each window's acknowledgements. A lost
  connection, the deadline or a protocol error raises `MqttWireError` and closes
  the connection; the caller sends again on a new one (clean session: the broker
  forgets the old packet ids).
- While connected, a daemon thread sends PINGREQ when nothing was sent for half
  the keep-alive, so the broker keeps an idle connection open; `healthy()` reads
  the PINGRESPs and tells whether the connection is still usable.

Order: one connection carries the PUBLISH packets in list order, and the broker
forwards them per topic in the order received (MQTT 3.1.1 §4.6, ordered topics).

Speed: a broker with Nagle's algorithm on (Mosquitto's default) holds back its
later acknowledgements until the client acknowledges the earlier TCP segment,
which Linux delays up to 40 ms once the client has stopped sending; the
publisher therefore asks for an immediate TCP acknowledgement (`TCP_QUICKACK`,
Linux only) after each read.
"""
from __future__ import annotations

import secrets
import socket
import ssl
import struct
import threading
import time
from typing import Iterable, Sequence

#: the largest remaining length four bytes encode (MQTT 3.1.1 §2.2.3)
MAX_REMAINING_LENGTH = 268_435_455
#: packet ids are 1-65535: at most this many QoS 1/2 messages in flight on one connection
MAX_IN_FLIGHT = 65_535
#: bytes handed to the kernel at once; acknowledgements are read between pieces, so a
#: broker that stops reading while its own writes block cannot deadlock the publisher
SEND_PIECE = 256 * 1024
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
PINGRESP = 13
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
#: CONNACK return codes of MQTT 3.1.1 §3.2.2.3
REFUSALS = {1: "Unsupported protocol version", 2: "Client identifier not valid",
            3: "Server unavailable", 4: "Bad user name or password", 5: "Not authorized"}
#: the socket option asking for an immediate TCP acknowledgement (Linux only)
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_NO_DATA = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_ID = struct.Struct("!H")
#: what the broker answers a PUBLISH of each QoS with
_ACKNOWLEDGEMENTS = {0: (), 1: (PUBACK,), 2: (PUBREC, PUBCOMP)}


class MqttWireError(ConnectionError):
    """The connection failed, was lost, timed out or broke the protocol; it is closed."""


class MqttRefused(MqttWireError):
    """The broker answered CONNECT with a refusal (the reason is the message)."""


class MqttTimeout(MqttWireError):
    """The deadline passed before the broker answered."""


# --- packets: pure functions ------------------------------------------------------

def encode_remaining_length(length: int) -> bytes:
    """MQTT's variable-length integer: 7 bits a byte, low bits first, high bit = more."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"MQTT packet of {length} bytes: the limit is {MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def decode_remaining_length(data: bytes | bytearray, offset: int) -> tuple[int, int] | None:
    """(length, offset after it) of the variable-length integer at `offset`, or None while
    `data` ends inside it; more than four bytes raise MqttWireError."""
    length = 0
    for position in range(4):
        if offset + position >= len(data):
            return None
        byte = data[offset + position]
        length |= (byte & 0x7F) << (7 * position)
        if not byte & 0x80:
            return length, offset + position + 1
    raise MqttWireError("malformed remaining length: more than four bytes")


def read_packets(data: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """The complete packets at the start of `data` as (first byte, rest of the packet), and
    how many bytes they took (a partial packet at the end is left for the next read)."""
    packets = []
    offset = 0
    while offset < len(data):
        decoded = decode_remaining_length(data, offset + 1)
        if decoded is None or decoded[1] + decoded[0] > len(data):
            break
        length, start = decoded
        packets.append((data[offset], bytes(data[start:start + length])))
        offset = start + length
    return packets, offset


def next_packet_id(packet_id: int) -> int:
    """The id after `packet_id`: 1, 2, ... 65535, then 1 again (0 is not a packet id)."""
    return packet_id % MAX_IN_FLIGHT + 1


def _string(text: str | bytes) -> bytes:
    """An MQTT UTF-8 string: two bytes of length, then the bytes."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > 0xFFFF:
        raise ValueError(f"MQTT string of {len(raw)} bytes: the limit is 65535")
    return _ID.pack(len(raw)) + raw


def connect_packet(client_id: str, keepalive_s: int, username: str | None = None,
                   password: str | None = None) -> bytes:
    """CONNECT for MQTT 3.1.1 with a clean session (and the login, when given)."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = b"".join([_string("MQTT"), bytes((4, flags)), _ID.pack(keepalive_s),
                     _string(client_id),
                     _string(username) if username is not None else b"",
                     _string(password) if password is not None else b""])
    return bytes((CONNECT << 4,)) + encode_remaining_length(len(body)) + body


def publish_packets(messages: Iterable[tuple[str, bytes]], qos: int,
                    first_id: int) -> tuple[bytes, list[int]]:
    """PUBLISH packets for `messages` in order, and their packet ids (none for QoS 0):
    `first_id` and the ones after it."""
    header = bytes((PUBLISH << 4 | qos << 1,))
    topics: dict[str, bytes] = {}
    parts: list[bytes] = []
    ids: list[int] = []
    packet_id = first_id
    for topic, payload in messages:
        name = topics.get(topic)
        if name is None:
            name = topics[topic] = _string(topic)
        if qos:
            ids.append(packet_id)
            name_and_id = name + _ID.pack(packet_id)
            packet_id = next_packet_id(packet_id)
        else:
            name_and_id = name
        parts += (header, encode_remaining_length(len(name_and_id) + len(payload)),
                  name_and_id, payload)
    return b"".join(parts), ids


def _acknowledgement(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010) or PUBCOMP for `packet_id`."""
    return bytes((kind << 4 | (0x02 if kind == PUBREL else 0), 2)) + _ID.pack(packet_id)


# --- the connection ---------------------------------------------------------------

class Publisher:
    """One MQTT connection that publishes lists of messages and waits for their acks.

    `client_id` "" gives each connection a random id of its own.
    """

    def __init__(self, host: str, port: int, *, client_id: str, keepalive_s: int = 30,
                 username: str | None = None, password: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.username, self.password = username, password
        self.ssl_context = ssl_context
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()   # one sender at a time: a publish or a PINGREQ
        self._stop_pings = threading.Event()
        self._received = bytearray()
        self._last_sent = 0.0
        self._next_id = 1

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self, deadline: float) -> None:
        """Open the connection and log in before `deadline` (time.monotonic())."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=_left(deadline))
        except OSError as error:
            raise _wire_error(error) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock.settimeout(_left(deadline))
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            self._sock, self._received, self._next_id = sock, bytearray(), 1
            client_id = self.client_id or f"fleetstream-{secrets.token_hex(8)}"
            self._send(connect_packet(client_id, self.keepalive_s, self.username,
                                      self.password), deadline)
            packets = self._read(deadline)
            while not packets:
                packets = self._read(deadline)
            (kind, body), *_ = packets
            if kind >> 4 != CONNACK or len(body) != 2:
                raise MqttWireError(f"expected CONNACK, got packet type {kind >> 4}")
            if body[1]:
                raise MqttRefused(REFUSALS.get(body[1], f"return code {body[1]}"))
        except BaseException as error:
            self.close()
            if isinstance(error, OSError) and not isinstance(error, MqttWireError):
                raise _wire_error(error) from None
            raise
        self._stop_pings = threading.Event()
        if self.keepalive_s:
            threading.Thread(target=self._ping, args=(sock, self._stop_pings), daemon=True,
                             name=f"mqtt-ping-{self.host}:{self.port}").start()

    def publish(self, messages: Sequence[tuple[str, bytes]], qos: int, deadline: float) -> None:
        """Send `messages` in order and return once the broker acknowledged each."""
        if self._sock is None:
            raise MqttWireError("not connected")
        try:
            with self._lock:
                for start in range(0, len(messages), MAX_IN_FLIGHT):
                    window = messages[start:start + MAX_IN_FLIGHT]
                    data, ids = publish_packets(window, qos, self._next_id)
                    if ids:
                        self._next_id = next_packet_id(ids[-1])
                    self._await(set(ids), qos, data, deadline)
        except BaseException as error:
            self.close()
            if isinstance(error, OSError) and not isinstance(error, MqttWireError):
                raise _wire_error(error) from None
            raise

    def _await(self, in_flight: set[int], qos: int, data: bytes, deadline: float) -> None:
        """Send `data` and read until every packet id of `in_flight` is acknowledged."""
        view = memoryview(data)
        for start in range(0, len(view), SEND_PIECE):
            self._send(view[start:start + SEND_PIECE], deadline)
            self._settle(self._read(None), in_flight, qos, deadline)
        while in_flight:
            self._settle(self._read(deadline), in_flight, qos, deadline)

    def _settle(self, packets: list[tuple[int, bytes]], in_flight: set[int], qos: int,
                deadline: float) -> None:
        """Take the acknowledgements in `packets` off `in_flight`; answer PUBRECs."""
        releases = []
        for kind, body in packets:
            kind >>= 4
            if kind == PINGRESP:
                continue
            if kind not in _ACKNOWLEDGEMENTS[qos] or len(body) != 2:
                raise MqttWireError(f"unexpected packet type {kind} while publishing QoS {qos}")
            packet_id = _ID.unpack(body)[0]
            if packet_id not in in_flight:
                raise MqttWireError(f"acknowledgement for packet id {packet_id}, not in flight")
            if kind == PUBREC:
                releases.append(_acknowledgement(PUBREL, packet_id))
            else:
                in_flight.remove(packet_id)
        if releases:
            self._send(b"".join(releases), deadline)

    def healthy(self) -> bool:
        """Whether the connection is open and has received nothing but PINGRESPs (a broker
        that closed an idle connection is found here, before a batch is sent on it)."""
        if self._sock is None:
            return False
        try:
            with self._lock:
                packets = self._read(None)
        except OSError:
            self.close()
            return False
        if any(kind >> 4 != PINGRESP for kind, _ in packets):
            self.close()
            return False
        return True

    def close(self) -> None:
        """Say DISCONNECT (when still possible) and close; idempotent."""
        self._stop_pings.set()
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.settimeout(0.1)
            sock.sendall(DISCONNECT_PACKET)
        except OSError:
            pass
        sock.close()

    # --- socket steps -------------------------------------------------------------

    def _send(self, data: bytes | memoryview, deadline: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(_left(deadline))
        self._sock.sendall(data)
        self._last_sent = time.monotonic()

    def _read(self, deadline: float | None) -> list[tuple[int, bytes]]:
        """The packets completed by one read: waiting until `deadline`, or only what has
        arrived already when `deadline` is None. The connection's end raises."""
        sock = self._sock
        if sock is None:
            raise MqttWireError("connection closed")
        sock.settimeout(0 if deadline is None else _left(deadline))
        try:
            data = sock.recv(1 << 16)
        except _NO_DATA:
            return []
        if not data:
            raise MqttWireError("connection closed by the broker")
        if _QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        self._received += data
        packets, used = read_packets(self._received)
        del self._received[:used]
        return packets

    def _ping(self, sock: socket.socket, stop: threading.Event) -> None:
        """PINGREQ on `sock` whenever nothing was sent for half the keep-alive, until `stop`."""
        interval = self.keepalive_s / 2
        while not stop.wait(interval / 4):
            with self._lock:
                if stop.is_set() or time.monotonic() - self._last_sent < interval:
                    continue
                try:
                    sock.settimeout(interval)
                    sock.sendall(PINGREQ_PACKET)
                    self._last_sent = time.monotonic()
                except OSError:   # the next publish or health check finds the lost connection
                    return


def _left(deadline: float) -> float:
    """Seconds until `deadline`; a passed deadline raises MqttTimeout."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise MqttTimeout("timed out")
    return left


def _wire_error(error: OSError) -> MqttWireError:
    """A socket or TLS error as the publisher's error (a socket timeout as MqttTimeout)."""
    if isinstance(error, TimeoutError):
        return MqttTimeout("timed out")
    return MqttWireError(f"{type(error).__name__}: {error}")
