"""A simulated OEM REST API: each vehicle's current state in its maker's format (§3).

    fleetstream simulate --serve-oem-api 8095 --vehicles 20 --source mercedes \\
        --rate-limit 10 --error-rate 0.01

    api = OemApi(20, source="mercedes", rate_limit=10)      # or in-process
    await api.start(8095); ...; await api.stop()

- `GET /vehicles/{vin}`: the vehicle's state as of its last update (the maker's payload,
  `formats`), with an `ETag`; `If-None-Match` with that ETag answers `304`. A vehicle's
  state is updated every `update_every_s` seconds (simulated time = wall time since start),
  or at once by `touch(vin)` (`POST /vehicles/{vin}/touch`). Unknown VINs answer 404.
- `rate_limit` calls a second at most (all VINs together, over the last second): beyond
  that `429` with `Retry-After: <retry_after_s>`. A call that comes before a Retry-After
  it was given has passed counts as `early_calls`.
- `error_rate`: that share of calls answers `500`; `fail(vin, n)` makes the next n calls of
  `vin` answer 500.
- `latency_s`: every answer waits that long (so that concurrency can be seen).
- `GET /vehicles` lists the VINs; `GET /stats` counts what was called: `{"calls": {vin: n},
  "total", "statuses": {code: n}, "max_in_flight", "early_calls"}`; `calls_log` holds
  (monotonic time, vin, status) per call for in-process tests.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, deque
from random import Random

import orjson
from aiohttp import web

from fleetstream.simulator import fleet
from fleetstream.simulator.formats import FORMATS


class OemApi:
    """The API of one maker's fleet (see the module docstring)."""

    def __init__(self, vehicles: int, *, source: str = "mercedes", seed: int = 0,
                 rate_limit: float | None = None, retry_after_s: int = 2,
                 error_rate: float = 0.0, update_every_s: float = 60.0,
                 latency_s: float = 0.0, etag: bool = True) -> None:
        if source not in FORMATS:
            raise ValueError(f"source must be one of {', '.join(FORMATS)}, got {source!r}")
        if not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate must be between 0 and 1, got {error_rate}")
        self.start_ms = int(time.time() * 1000)
        self.format = FORMATS[source]
        self.cars = {car.vin: car for car in fleet(vehicles, seed=seed, sources=[source],
                                                    start_ms=self.start_ms)}
        self.rate_limit = rate_limit
        self.retry_after_s = retry_after_s
        self.error_rate = error_rate
        self.update_every_ms = int(update_every_s * 1000)
        self.latency_s = latency_s
        self.etag = etag
        self.rng = Random(f"fleetstream-oem-api:{seed}")
        self.calls: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.calls_log: list[tuple[float, str, int]] = []
        self.in_flight = self.max_in_flight = self.early_calls = 0
        self._not_before = 0.0                   # monotonic: the last Retry-After's end
        self._recent: deque[float] = deque()     # monotonic times of the last second's calls
        self._failing: Counter[str] = Counter()
        self._bodies: dict[str, tuple[int, bytes]] = {}   # vin -> (update tick, body)
        self._runner: web.AppRunner | None = None

    @property
    def vins(self) -> list[str]:
        return list(self.cars)

    def body(self, vin: str) -> bytes:
        """The vehicle's payload as of its last update."""
        now_ms = int(time.time() * 1000)
        tick = self.start_ms + (now_ms - self.start_ms) // self.update_every_ms \
            * self.update_every_ms
        cached = self._bodies.get(vin)
        if cached is None or cached[0] < tick:
            self._update(vin, tick)
        return self._bodies[vin][1]

    def touch(self, vin: str) -> None:
        """Update the vehicle's state now (its next answer differs)."""
        self._update(vin, max(int(time.time() * 1000),
                              self._bodies.get(vin, (0, b""))[0] + 1))

    def fail(self, vin: str, calls: int) -> None:
        """The next `calls` calls of `vin` answer 500."""
        self._failing[vin] += calls

    def _update(self, vin: str, at_ms: int) -> None:
        car = self.cars[vin]
        car.advance(at_ms)
        payload = self.format.encode(car, at_ms, True)
        self._bodies[vin] = (at_ms, orjson.dumps(payload))

    def stats(self) -> dict:
        return {"calls": dict(self.calls), "total": sum(self.calls.values()),
                "statuses": {str(code): n for code, n in self.statuses.items()},
                "max_in_flight": self.max_in_flight, "early_calls": self.early_calls}

    async def _vehicle(self, request: web.Request) -> web.Response:
        vin = request.match_info["vin"]
        now = time.monotonic()
        self.calls[vin] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = self._limit(now)
            if response is None:
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                response = self._answer(vin, request.headers.get("If-None-Match"))
        finally:
            self.in_flight -= 1
        self.statuses[response.status] += 1
        self.calls_log.append((now, vin, response.status))
        return response

    def _limit(self, now: float) -> web.Response | None:
        """A 429 (answered at once) when the last second's calls exceed the rate limit."""
        if now < self._not_before:
            self.early_calls += 1
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        self._recent.append(now)
        if self.rate_limit is None or len(self._recent) <= self.rate_limit:
            return None
        self._not_before = max(self._not_before, now + self.retry_after_s)
        return web.json_response({"error": "too many requests"}, status=429,
                                 headers={"Retry-After": str(self.retry_after_s)})

    def _answer(self, vin: str, if_none_match: str | None) -> web.Response:
        if vin not in self.cars:
            return web.json_response({"error": f"no vehicle {vin}"}, status=404)
        if self._failing[vin] > 0 or self.rng.random() < self.error_rate:
            self._failing[vin] = max(0, self._failing[vin] - 1)
            return web.json_response({"error": "internal error"}, status=500)
        body = self.body(vin)
        tag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
        if self.etag and if_none_match == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.Response(body=body, content_type="application/json",
                            headers={"ETag": tag} if self.etag else {})

    async def _touch(self, request: web.Request) -> web.Response:
        vin = request.match_info["vin"]
        if vin not in self.cars:
            return web.json_response({"error": f"no vehicle {vin}"}, status=404)
        self.touch(vin)
        return web.json_response({"touched": vin})

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response({"vehicles": self.vins})

    async def _stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/vehicles/{vin}", self._vehicle)
        app.router.add_post("/vehicles/{vin}/touch", self._touch)
        app.router.add_get("/vehicles", self._list)
        app.router.add_get("/stats", self._stats)
        return app

    async def start(self, port: int, host: str = "127.0.0.1") -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def serve_oem_api(port: int, vehicles: int, **options: object) -> None:
    """Serve the API until interrupted (`fleetstream simulate --serve-oem-api`)."""
    async def main() -> None:
        api = OemApi(vehicles, **options)  # type: ignore[arg-type]
        await api.start(port)
        print(f"OEM API ({api.format.source}, {vehicles} vehicles) on "
              f"http://127.0.0.1:{port}/vehicles/{{vin}}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await api.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
