"""The API's routes (DATA-CONTRACTS §10): plain ASGI (`api/http.py`), JSON by orjson,
state from Redis.

    GET /v1/vehicles[?near=LAT,LON&radius_m=R]        the caller's approved vehicles
    GET /v1/vehicles/{id}                             their latest state
    GET /v1/vehicles/{id}/{capability}/{property}     one property's entries
    GET /v1/geofences/{geofence_id}/events?since=ISO  the caller's geofence events (§11)
    GET /openapi.json

Every answer but /openapi.json needs `Authorization: Bearer <key>` (401 otherwise). A
vehicle not approved for the caller, one that does not exist and a malformed id all answer
the same 404; a property the caller may not see answers like one that does not exist.
`{id}` is the caller's vehicle id: the VIN, or for a pseudonymous application its
pseudonym (never the VIN). Answers carry an `ETag`; `If-None-Match` with it answers 304.
Bad requests answer 4xx (400 bad parameters, 404 unknown paths, 405 other methods, 414
overlong URLs); Redis unreachable answers 503.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
from typing import Any, Awaitable, Callable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fleetstream.api.activations import Approvals
from fleetstream.api.http import Answer, Request, Router, error
from fleetstream.api.keys import ApiKeys
from fleetstream.api.openapi import OPENAPI
from fleetstream.api.reads import BatchedReads
from fleetstream.schemas.config import Application
from fleetstream.schemas.state import (GEO_KEY, AnswerLayouts, geofence_events_key,
                                       property_entries, property_fields, state_answer_json,
                                       state_key)
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms

_log = logging.getLogger(__name__)

#: a vehicle id: a VIN (17 characters) or a pseudonym (`p-` + 32 hex); anything else is unknown
_VEHICLE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_NAME = re.compile(r"[a-z_]{1,64}")
MAX_RADIUS_M = 1_000_000.0
MAX_EVENTS = 10_000

_NOT_FOUND_VEHICLE = error(404, "vehicle not found")
_NOT_FOUND_PROPERTY = error(404, "property not found")
_NOT_FOUND_GEOFENCE = error(404, "geofence not found")
_UNAUTHORIZED = error(401, "missing or invalid API key (Authorization: Bearer <key>)",
                      {"www-authenticate": 'Bearer realm="fleetstream"'})
_UNAVAILABLE = error(503, "state store unavailable, retry later", {"retry-after": "1"})
_OPENAPI = Answer(200, orjson.dumps(OPENAPI))
_CACHE_CONTROL = (b"cache-control", b"private, no-cache")


def _json(request: Request, answer: Any) -> Answer:
    """200 with an ETag, or 304 when the client has that version already."""
    body = answer if isinstance(answer, bytes) else orjson.dumps(answer)
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    tag = (b"etag", etag.encode())
    if_none_match = request.header(b"if-none-match")
    if if_none_match and _matches(if_none_match, etag):
        return Answer(304, b"", (tag,))
    return Answer(200, body, (tag, _CACHE_CONTROL))


def _matches(if_none_match: str, etag: str) -> bool:
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in if_none_match.split(","))


class StateApi:
    """The routes over one Redis client, the approvals and the keys."""

    def __init__(self, applications: tuple[Application, ...], approvals: Approvals,
                 keys: ApiKeys, client: aioredis.Redis) -> None:
        self.applications = {app.id: app for app in applications}
        self.approvals = approvals
        self.keys = keys
        self.redis = client
        self.reads = BatchedReads(client)
        self._layouts = {app.id: AnswerLayouts(app.permitted) for app in applications}

    def _caller(self, request: Request) -> Application | None:
        app_id = self.keys.application_of(request.header(b"authorization"))
        return None if app_id is None else self.applications.get(app_id)

    def _vin(self, app: Application, vehicle_id: str) -> str | None:
        if not _VEHICLE_ID.fullmatch(vehicle_id):
            return None
        return self.approvals.vin_of(app.id, vehicle_id)

    async def vehicles(self, request: Request, app: Application) -> Answer:
        near, radius = request.query.get("near"), request.query.get("radius_m")
        if near is None and radius is None:
            return _json(request, {"vehicles": self.approvals.vehicle_ids(app.id)})
        try:
            lat, lon = (float(part) for part in (near or "").split(","))
            radius_m = float(radius or "")
        except ValueError:
            return error(400, "near=LAT,LON and radius_m=METRES go together, as numbers")
        if not (all(map(math.isfinite, (lat, lon, radius_m))) and abs(lat) <= 85.05112878
                and abs(lon) <= 180 and 0 < radius_m <= MAX_RADIUS_M):
            return error(400, f"near: latitude within ±85.05, longitude within ±180; "
                              f"radius_m: above 0, at most {MAX_RADIUS_M:.0f}")
        vins = await self.redis.geosearch(GEO_KEY, longitude=lon, latitude=lat,
                                          radius=radius_m, unit="m", sort="ASC")
        ids = self.approvals.id_of_vin(app.id)
        return _json(request, {"vehicles": [ids[vin] for vin in map(bytes.decode, vins)
                                            if vin in ids]})

    async def vehicle(self, request: Request, app: Application) -> Answer:
        vehicle_id, = request.params
        vin = self._vin(app, vehicle_id)
        if vin is None:
            return _NOT_FOUND_VEHICLE
        stored = await self.reads.hgetall(state_key(vin))
        if self.approvals.vin_of(app.id, vehicle_id) is None:   # revoked meanwhile
            return _NOT_FOUND_VEHICLE
        answer = state_answer_json(vehicle_id, stored, self._layouts[app.id]) or {
            "vin": vehicle_id, "updated_at": None, "data": {}}
        return _json(request, answer)

    async def vehicle_property(self, request: Request, app: Application) -> Answer:
        vehicle_id, capability, prop = request.params
        vin = self._vin(app, vehicle_id)
        if vin is None:
            return _NOT_FOUND_VEHICLE
        if not (_NAME.fullmatch(capability) and _NAME.fullmatch(prop)
                and prop in app.permitted.get(capability, ())):
            return _NOT_FOUND_PROPERTY
        name, is_prefix = property_fields(capability, prop)
        if is_prefix:
            flat = await self.reads.hgetall(state_key(vin))
            stored = list(zip(flat[0::2], flat[1::2]))
        else:
            value = await self.reads.hget(state_key(vin), name)
            stored = [] if value is None else [(name.encode(), value)]
        if self.approvals.vin_of(app.id, vehicle_id) is None:
            return _NOT_FOUND_VEHICLE
        return _json(request, {"vin": vehicle_id, "capability": capability, "property": prop,
                               "entries": property_entries(stored, capability, prop)})

    async def geofence_events(self, request: Request, app: Application) -> Answer:
        geofence_id, = request.params
        if geofence_id not in {fence.id for fence in app.geofences}:
            return _NOT_FOUND_GEOFENCE
        since_text = request.query.get("since")
        limit_text = request.query.get("limit", str(1000))
        try:
            since_ms = 0 if since_text is None else max(to_epoch_ms(since_text), 0)
        except (TypeError, ValueError, OverflowError):
            return error(400, "since: expected an ISO-8601 time, e.g. 2026-03-01T08:00:00Z")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_EVENTS:
            return error(400, f"limit: expected a whole number from 1 to {MAX_EVENTS}")
        key = geofence_events_key(app.id, geofence_id)
        entries = await self.redis.xrange(key, min=str(since_ms), max="+",
                                          count=int(limit_text))
        events = []
        for _, fields in entries:
            try:
                event = orjson.loads(fields[b"event"])
            except (KeyError, orjson.JSONDecodeError):
                continue
            if isinstance(event, dict) and isinstance(event.get("vin"), str) \
                    and self.approvals.vin_of(app.id, event["vin"]) is not None:
                events.append(event)
        return _json(request, {"geofence_id": geofence_id, "since": iso_ms(since_ms),
                               "events": events})


def _authorised(api: StateApi, handler: Callable[[Request, Application], Awaitable[Answer]]
                ) -> Callable[[Request], Awaitable[Answer]]:
    async def endpoint(request: Request) -> Answer:
        app = api._caller(request)
        if app is None:
            return _UNAUTHORIZED
        try:
            return await handler(request, app)
        except RedisError as failure:
            _log.warning("state store: %s", failure)
            return _UNAVAILABLE
    return endpoint


async def _openapi(_request: Request) -> Answer:
    return _OPENAPI


def create_app(api: StateApi, lifespan: Any = None) -> Router:
    """The ASGI application."""
    return Router([      # the most asked first: routes are tried in order
        (("v1", "vehicles", None), _authorised(api, api.vehicle)),
        (("v1", "vehicles"), _authorised(api, api.vehicles)),
        (("openapi.json",), _openapi),
        (("v1", "vehicles", None, None, None), _authorised(api, api.vehicle_property)),
        (("v1", "geofences", None, "events"), _authorised(api, api.geofence_events)),
    ], lifespan)
