"""The API's HTTP plumbing: a plain ASGI application with its own router for a few routes.

    app = Router([(("v1", "vehicles", None), handler), ...], lifespan)

A route is a path split at "/" whose `None` parts take any non-empty segment (they are the
handler's `request.params`); paths are matched as the server decoded them (`scope["path"]`).
Only GET (and HEAD, which the server answers without a body) reach a handler: another
method on a known path answers 405, an unknown path 404, an overlong path or query string
414 before any routing. A handler returns an `Answer`; an exception it raises answers 500
(logged). Headers of the common answers are built once. Starlette did this before at about
a third of the CPU of an answer; this does only what the routes need.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Awaitable, Callable, Mapping, NamedTuple, Sequence
from urllib.parse import parse_qsl

import orjson

_log = logging.getLogger(__name__)

MAX_QUERY_BYTES = 1024
MAX_PATH_BYTES = 512
_JSON_TYPE = (b"content-type", b"application/json")


class Answer(NamedTuple):
    """An HTTP answer: status, body and its headers but content type and length."""

    status: int
    body: bytes = b""
    headers: Sequence[tuple[bytes, bytes]] = ()


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    """A JSON `{"error": message}` answer."""
    return Answer(status, orjson.dumps({"error": message}),
                  [(name.encode(), value.encode()) for name, value in (headers or {}).items()])


class Request:
    """What a handler reads of a request: path parameters, query and headers."""

    __slots__ = ("params", "_scope", "_query")

    def __init__(self, scope: Mapping[str, Any], params: list[str]) -> None:
        self.params = params
        self._scope = scope
        self._query: dict[str, str] | None = None

    def header(self, name: bytes) -> str | None:
        """The first value of a header (`name` lower case), or None."""
        for key, value in self._scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def query(self) -> dict[str, str]:
        """The query parameters (of one repeated, the last)."""
        if self._query is None:
            self._query = dict(parse_qsl(self._scope.get("query_string", b"").decode("latin-1"),
                                         keep_blank_values=True))
        return self._query


Handler = Callable[[Request], Awaitable[Answer]]
Route = tuple[tuple[str | None, ...], Handler]

_NOT_FOUND = error(404, "Not Found")
_NOT_ALLOWED = error(405, "Method Not Allowed", {"allow": "GET, HEAD"})
_TOO_LONG = error(414, "URL too long")
_INTERNAL = error(500, "internal error")


class Router:
    """The ASGI application: routes, limits, and the lifespan of `lifespan` (an async
    context manager factory taking the application, as Starlette's)."""

    def __init__(self, routes: Sequence[Route],
                 lifespan: Callable[[Any], contextlib.AbstractAsyncContextManager] | None = None
                 ) -> None:
        self._routes = [(len(pattern) + 1, pattern, handler) for pattern, handler in routes]
        self._lifespan = lifespan

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._send(send, await self._answer(scope))
        elif scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)

    async def _answer(self, scope: Mapping[str, Any]) -> Answer:
        if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES \
                or len(scope.get("raw_path") or b"") > MAX_PATH_BYTES:
            return _TOO_LONG
        parts = scope["path"].split("/")
        for length, pattern, handler in self._routes:
            if len(parts) == length and _matches(pattern, parts):
                break
        else:
            return _NOT_FOUND
        if scope["method"] not in ("GET", "HEAD"):
            return _NOT_ALLOWED
        try:
            return await handler(Request(scope, [part for part, want in zip(parts[1:], pattern)
                                                 if want is None]))
        except Exception:                       # noqa: BLE001 - a 500, never a dropped request
            _log.exception("%s %s", scope["method"], scope["path"])
            return _INTERNAL

    @staticmethod
    async def _send(send: Any, answer: Answer) -> None:
        status, body, headers = answer
        if status == 304:
            head = list(headers)
        else:
            head = [_JSON_TYPE, (b"content-length", b"%d" % len(body)), *headers]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    async def _run_lifespan(self, receive: Any, send: Any) -> None:
        context = self._lifespan(self) if self._lifespan else contextlib.nullcontext()
        await receive()                         # lifespan.startup
        try:
            await context.__aenter__()
        except Exception as failure:            # noqa: BLE001 - the server reports it
            await send({"type": "lifespan.startup.failed", "message": str(failure)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()                         # lifespan.shutdown
        await context.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})


def _matches(pattern: tuple[str | None, ...], parts: list[str]) -> bool:
    """`parts` ("", then each segment) fit `pattern`: literals equal, parameters non-empty."""
    for want, part in zip(pattern, parts[1:]):
        if part != want if want is not None else not part:
            return False
    return True
