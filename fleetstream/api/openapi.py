"""The API's OpenAPI 3.1 description, served at /openapi.json."""
from __future__ import annotations

from typing import Any

from fleetstream.schemas.catalogue import CAPABILITIES

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_ENTRY = {"type": "object", "description": "an entry of DATA-CONTRACTS §4: `data` and `timestamp`",
          "properties": {"data": {}, "timestamp": {"type": "string", "format": "date-time"}},
          "required": ["data", "timestamp"]}


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": {"ETag": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_COMMON = {"401": _error("no valid API key"), "304": {"description": "not modified (If-None-Match)"},
           "503": _error("the state store is unavailable")}
_VEHICLE_ID = {"name": "vehicle_id", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "the VIN, or the application's pseudonymous id when it has "
                              "vehicle_ids: pseudonymous"}
_IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False,
                  "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "FleetStream latest-state API", "version": "1",
             "description": "The latest value of every permitted property of the caller's "
                            "approved vehicles (DATA-CONTRACTS §10)."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": _ERROR, "Entry": _ENTRY},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/vehicles": {"get": {
            "summary": "The vehicles approved for the caller now (optionally near a point)",
            "parameters": [
                {"name": "near", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "LAT,LON; with radius_m: only vehicles whose latest location "
                                "is within radius_m metres, nearest first"},
                {"name": "radius_m", "in": "query", "required": False,
                 "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000}},
                _IF_NONE_MATCH],
            "responses": {"200": _answer("the vehicles", {
                "type": "object", "properties": {"vehicles": {"type": "array",
                                                              "items": {"type": "string"}}}}),
                "400": _error("bad near/radius_m"), **_COMMON}}},
        "/v1/vehicles/{vehicle_id}": {"get": {
            "summary": "A vehicle's latest state: per permitted property its newest entries",
            "parameters": [_VEHICLE_ID, _IF_NONE_MATCH],
            "responses": {"200": _answer("the state", {
                "type": "object", "properties": {
                    "vin": {"type": "string"},
                    "updated_at": {"type": ["string", "null"], "format": "date-time"},
                    "data": {"type": "object", "description": "capability -> property -> entries",
                             "additionalProperties": {"type": "object", "additionalProperties": {
                                 "type": "array", "items": {"$ref": "#/components/schemas/Entry"}}}}}}),
                "404": _error("vehicle not found (not approved for the caller, or unknown)"),
                **_COMMON}}},
        "/v1/vehicles/{vehicle_id}/{capability}/{property}": {"get": {
            "summary": "One property's newest entries (one per instance)",
            "parameters": [_VEHICLE_ID,
                           {"name": "capability", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": list(CAPABILITIES)}},
                           {"name": "property", "in": "path", "required": True,
                            "schema": {"type": "string"}}, _IF_NONE_MATCH],
            "responses": {"200": _answer("the entries", {
                "type": "object", "properties": {
                    "vin": {"type": "string"}, "capability": {"type": "string"},
                    "property": {"type": "string"},
                    "entries": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}}}}),
                "404": _error("vehicle or property not found (or not permitted)"), **_COMMON}}},
        "/v1/geofences/{geofence_id}/events": {"get": {
            "summary": "The caller's geofence events (DATA-CONTRACTS §11) since a time",
            "parameters": [
                {"name": "geofence_id", "in": "path", "required": True,
                 "schema": {"type": "string"}},
                {"name": "since", "in": "query", "required": False,
                 "schema": {"type": "string", "format": "date-time"}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 1000}},
                _IF_NONE_MATCH],
            "responses": {"200": _answer("the events, oldest first", {
                "type": "object", "properties": {
                    "geofence_id": {"type": "string"}, "since": {"type": "string"},
                    "events": {"type": "array", "items": {"type": "object"}}}}),
                "400": _error("bad since or limit"), "404": _error("geofence not found"),
                **_COMMON}}},
    },
}
