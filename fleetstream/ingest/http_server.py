"""A lean HTTP/1.1 server for the push listener: an asyncio.Protocol on httptools' parser.

    server = await start_server(routes, host, port, Limits(max_body_bytes=1 << 20))
    ...
    await stop_server(server, grace_s=6)     # stop accepting, finish answers in flight

aiohttp's request machinery cost the gateway most of its CPU per push; this server does
only what the push routes need, on bytes, with no task per request. `routes` (see
`Routes`) is asked twice per request: `head` once the headers are in (an answer there is
sent instead, and the body is read and dropped, never kept), `complete` once the whole
body is in (an Answer, or a future of one, e.g. Kafka's acknowledgement).

What the server itself enforces:

* answers leave in the order of the requests on a connection (pipelining), at most
  `MAX_PIPELINED` in flight before it stops reading from that connection;
* a body over `max_body_bytes`: by Content-Length before reading, or as a chunked body
  streams, answered `routes.body_error(request, 413)` and the connection closed;
* a body not in whole within `body_timeout_s` of its headers: 408, closed; a body cut
  short (the sender half-closed) or any unparsable request: 400, closed; a request head
  over `MAX_HEAD_BYTES`: 431, closed;
* `Expect: 100-continue` is answered `100 Continue` when the head was accepted and
  nothing is in flight before it; a head refused with it closes the connection after
  the refusal (the body never comes);
* keep-alive as HTTP/1.1 says (Connection headers, HTTP/1.0), an idle connection (or a
  head trickling in) closed after `keepalive_timeout_s`;
* a connection it closes is closed lingering: its write side first, what the sender still
  sends is read and dropped for up to `LINGER_S`, so the answer is not lost to a reset.
"""
from __future__ import annotations

import asyncio
import http
import logging
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol as Interface

import httptools

log = logging.getLogger(__name__)

#: requests read ahead of their answers on one connection before reading pauses
MAX_PIPELINED = 64
#: request line and headers together, at most
MAX_HEAD_BYTES = 64 * 1024
#: how long a connection being closed still reads (and drops) what the sender sends
LINGER_S = 2.0

_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Answer:
    """One HTTP answer; its bytes are built once (answers are often shared constants)."""

    __slots__ = ("status", "close", "_head", "_body")

    def __init__(self, status: int, body: bytes = b"", content_type: str | None = None,
                 headers: tuple[tuple[str, str], ...] = (), close: bool = False) -> None:
        self.status, self.close, self._body = status, close, body
        lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Unknown"))]
        if content_type:
            lines.append(b"Content-Type: " + content_type.encode())
        lines += [f"{name}: {value}".encode() for name, value in headers]
        lines.append(b"Content-Length: %d" % len(body))
        self._head = b"\r\n".join(lines) + b"\r\n"

    def encode(self, keep_alive: bool, head_only: bool) -> bytes:
        """The answer's bytes; `Connection: close` when the connection ends after it."""
        connection = b"\r\n" if keep_alive else b"Connection: close\r\n\r\n"
        return self._head + connection + (b"" if head_only else self._body)


class Request:
    """One request: head fields as bytes (header names lower-case, the first of repeated
    ones), the body once complete; `route` is the routes' own note about it."""

    __slots__ = ("method", "url", "path", "headers", "body", "received_ms", "transport",
                 "route", "keep_alive")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.method, self.url, self.path = "", b"", ""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.received_ms = 0
        self.transport = transport
        self.route: Any = None
        self.keep_alive = True


class Routes(Interface):
    """What the server asks about each request (see the module's docstring)."""

    def head(self, request: Request) -> Answer | None: ...

    def complete(self, request: Request) -> Answer | asyncio.Future[Answer]: ...

    def body_error(self, request: Request, status: int) -> Answer: ...


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    body_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0


_BAD_REQUEST = Answer(400, b"malformed request", "text/plain; charset=utf-8", close=True)
_HEAD_TOO_LARGE = Answer(431, b"request head too large", "text/plain; charset=utf-8",
                         close=True)
_FAILED = Answer(500, b"internal error", "text/plain; charset=utf-8", close=True)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, asks the routes, answers in order."""

    def __init__(self, routes: Routes, limits: Limits, open_: set[_Connection]) -> None:
        self.routes, self.limits, self.open = routes, limits, open_
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        #: (keep_alive, head_only, the answer or its future), oldest first
        self.answers: deque[tuple[bool, bool, Answer | asyncio.Future[Answer]]] = deque()
        self.request: Request | None = None
        self.parts: list[bytes] = []
        self.size = 0
        self.head_bytes = 0
        self.refused: Answer | None = None     # the head's answer: the body is dropped
        self.closing = False                   # a closing answer is queued: read nothing more
        self.paused = False
        self.eof = False
        #: since when the connection waits for a request's head (None: it does not)
        self.idle_since: float | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    # --- transport events -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open.add(self)
        self._arm_idle()

    def connection_lost(self, _exc: Exception | None) -> None:
        self.open.discard(self)
        self._cancel_timers()
        self.answers.clear()
        self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
            request = self.request
            if request is not None and request.received_ms and self.body_timer is None \
                    and not self.closing:   # a body still to come: it has body_timeout_s
                self.body_timer = self.loop.call_later(self.limits.body_timeout_s,
                                                       self._body_late)
        except httptools.HttpParserUpgrade:
            self._queue_closing(_BAD_REQUEST)
        except httptools.HttpParserError:
            self._queue_closing(_HEAD_TOO_LARGE if self.head_bytes > MAX_HEAD_BYTES
                                else self._body_error(400))

    def eof_received(self) -> bool:
        self.eof = True
        if self.closing:
            self._close()
            return False
        if self.request is not None:       # the sender stopped in the middle of a request
            self._queue_closing(self._body_error(400))
        else:
            self._flush()
        return True                         # answers in flight still go out

    def pause_writing(self) -> None:   # a slow reader: stop reading its requests meanwhile
        self._pause()

    def resume_writing(self) -> None:
        self._flush()

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.closing:
            raise _Stop
        assert self.transport is not None
        self.request = Request(self.transport)
        self.parts, self.size, self.head_bytes, self.refused = [], 0, 0, None

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        self.request.url += url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        self.request.headers.setdefault(name.lower(), value)  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        request = self.request
        if self.closing or request is None:
            raise _Stop
        self._cancel_idle()
        request.received_ms = int(time.time() * 1000)
        request.method = self.parser.get_method().decode("ascii", "replace")
        request.keep_alive = self.parser.should_keep_alive()
        try:
            request.path = httptools.parse_url(request.url).path.decode("utf-8", "replace")
        except httptools.HttpParserInvalidURLError:
            request.path = ""
        length = request.headers.get(b"content-length")
        refused = self._answer(request, "head")
        if refused is None and length is not None and int(length) > self.limits.max_body_bytes:
            refused = self.routes.body_error(request, 413)
        if refused is not None and refused.close:
            self._queue_closing(refused)
            return
        self.refused = refused
        if request.headers.get(b"expect", b"").lower() == b"100-continue":
            if refused is not None:     # the body will not come: answer and close
                self._queue_closing(refused)
                return
            if not self.answers:
                self.transport.write(_CONTINUE)  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return
        self.size += len(body)
        if self.size > self.limits.max_body_bytes:
            self._queue_closing(self._body_error(413))
            raise _Stop
        if self.refused is None:
            self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        request = self.request
        assert request is not None
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        self.request = None
        if self.refused is not None:
            answer: Answer | asyncio.Future[Answer] = self.refused
        else:
            request.body = b"".join(self.parts) if len(self.parts) != 1 else self.parts[0]
            self.parts = []
            answer = self._answer(request, "complete")
        head_only = request.method == "HEAD"
        self.answers.append((request.keep_alive, head_only, answer))
        if isinstance(answer, asyncio.Future):
            answer.add_done_callback(self._answered)
            if len(self.answers) >= MAX_PIPELINED:
                self._pause()
        self._flush()

    # --- answering ------------------------------------------------------------------------

    def _answer(self, request: Request, step: str) -> Any:
        try:
            return getattr(self.routes, step)(request)
        except Exception:  # noqa: BLE001 - a bug in a route must not kill the connection
            log.exception("HTTP %s %s failed", request.method, request.path)
            return _FAILED

    def _answered(self, _future: asyncio.Future[Answer]) -> None:
        self._flush()

    def _flush(self) -> None:
        """Write every answer that is ready, in order; close when one says so."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        answers = self.answers
        while answers:
            keep_alive, head_only, answer = answers[0]
            if isinstance(answer, asyncio.Future):
                if not answer.done():
                    break
                answer = _FAILED if answer.cancelled() or answer.exception() else answer.result()
            answers.popleft()
            keep_alive = keep_alive and not answer.close
            transport.write(answer.encode(keep_alive, head_only))
            if not keep_alive:
                answers.clear()
                self._linger()
                return
        if self.paused and len(answers) < MAX_PIPELINED // 2 \
                and transport.get_write_buffer_size() < 64 * 1024:
            self.paused = False
            transport.resume_reading()
        if not answers:
            if self.eof and self.request is None:
                self._linger()
            elif self.request is None or not self.request.received_ms:
                self._arm_idle()

    def _queue_closing(self, answer: Answer) -> None:
        """Answer `answer` after those before it, then close; read nothing more."""
        if self.closing:
            return
        self.closing = True
        self._cancel_timers()
        self.request = None
        self.answers.append((False, False, answer))
        self._flush()

    def _body_error(self, status: int) -> Answer:
        request = self.request
        if request is None or not request.received_ms or self.refused is not None:
            return _BAD_REQUEST if status == 400 else Answer(
                status, b"", None, close=True)
        return self.routes.body_error(request, status)

    def _body_late(self) -> None:
        self.body_timer = None
        if self.request is not None:
            self._queue_closing(self._body_error(408))

    # --- connection housekeeping ----------------------------------------------------------

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _Stop

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _linger(self) -> None:
        """Close: the write side now, the rest once the sender closed or after LINGER_S."""
        transport = self.transport
        self.closing = True
        self._cancel_timers()
        if transport is None or transport.is_closing():
            return
        if self.eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self.paused:
            transport.resume_reading()
        self.idle_timer = self.loop.call_later(LINGER_S, transport.close)

    def _close(self) -> None:
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()

    def _arm_idle(self) -> None:
        """The connection now waits for a head; one timer checks it lazily (no timer per
        request on a busy connection)."""
        if self.closing:
            return
        self.idle_since = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_later(self.limits.keepalive_timeout_s,
                                                   self._idle_late)

    def _idle_late(self) -> None:
        self.idle_timer = None
        if self.idle_since is None or self.closing:
            return
        left = self.idle_since + self.limits.keepalive_timeout_s - self.loop.time()
        if left > 0:
            self.idle_timer = self.loop.call_later(left, self._idle_late)
        elif not self.answers:
            self._close()

    def _cancel_idle(self) -> None:
        self.idle_since = None

    def _cancel_timers(self) -> None:
        self.idle_since = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def busy(self) -> bool:
        """True while an answer is still to be written."""
        return bool(self.answers) and self.transport is not None \
            and not self.transport.is_closing()


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the connection is being closed)."""


class Server:
    """A listening socket and its open connections."""

    def __init__(self, server: asyncio.AbstractServer, connections: set[_Connection]) -> None:
        self.server, self.connections = server, connections


async def start_server(routes: Routes, host: str, port: int, limits: Limits,
                       ssl_context: ssl.SSLContext | None = None,
                       reuse_port: bool = False, backlog: int = 1024) -> Server:
    """Listen on `host:port` (TLS with `ssl_context`)."""
    connections: set[_Connection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(routes, limits, connections),
                                      host, port, ssl=ssl_context, backlog=backlog,
                                      reuse_port=reuse_port or None)
    return Server(server, connections)


async def stop_server(server: Server, grace_s: float) -> None:
    """Stop accepting; wait up to `grace_s` for the answers in flight, then close all."""
    server.server.close()
    deadline = time.monotonic() + grace_s
    while any(c.busy() for c in server.connections) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for connection in list(server.connections):
        connection._close()
    await server.server.wait_closed()
