"""Reading the applications' configuration (DATA-CONTRACTS §6).

`load_config(path)` reads and validates the YAML file at start-up; any problem
raises ConfigError naming the entry and the fix, before any data moves.

    applications:
      - id: fleet-a
        permissions: [diagnostics.odometer, charging.*]
        sink: {type: file, path: out/fleet-a, max_delay: 60}
    activations: activations.jsonl   # a JSON-lines file, or an inline list
    state: {redis: "redis://127.0.0.1:6379/0"}   # optional: the latest-state store (§10)

An application may name `api_keys_env`, the environment variable holding its
comma-separated API keys; only `fleetstream api` reads that variable.

An application may add `geofences:` (circles and polygons, DATA-CONTRACTS §11;
`fleetstream.schemas.geofences`) and `geofence_hysteresis_m:` (its default margin);
geofences need the `vehicle_location.coordinates` permission and a JSON sink format.

Relative file names (activations, a sink's local `path`) are relative to the
configuration file. Each `sink:` section is checked through the sink registry
(`fleetstream.io.sinks.registry`), which also gives the application's batching.
"""
from __future__ import annotations

import re
from pathlib import Path
import os
from typing import Any, Iterable, Mapping

import orjson

from fleetstream.io.sinks.registry import build_sink
from fleetstream.schemas.activations import ActivationEvent, parse_activation
from fleetstream.schemas.catalogue import expand_permission
from fleetstream.schemas.config import Application, Config, StateStore
from fleetstream.schemas.errors import ConfigError, refuse_unknown
from fleetstream.schemas.geofences import DEFAULT_HYSTERESIS_M, parse_geofences, parse_hysteresis
from fleetstream.schemas.secrets import secret_from_env
from fleetstream.schemas.vehicle_ids import VEHICLE_ID_MODES
from fleetstream.settings.yaml_file import read_yaml

_APPLICATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file; ConfigError names the entry at fault."""
    path = Path(path)
    raw = read_yaml(path, "configuration file")
    return parse_config(raw, base_dir=path.parent, name=str(path))


def parse_config(raw: Any, base_dir: Path = Path("."), name: str = "configuration",
                 environ: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed configuration mapping; secrets come from `environ`
    (default: the process environment)."""
    environ = os.environ if environ is None else environ
    if not isinstance(raw, dict) or not isinstance(raw.get("applications"), list) \
            or not raw["applications"]:
        raise ConfigError(f"{name}: needs `applications:`, a non-empty list of applications")
    unknown = sorted(set(raw) - {"applications", "activations", "state"})
    if unknown:
        raise ConfigError(f"{name}: unknown top-level key(s) {', '.join(unknown)}; "
                          f"expected applications, activations and state")
    applications = tuple(_application(i, entry, base_dir, environ)
                         for i, entry in enumerate(raw["applications"]))
    seen: set[str] = set()
    for app in applications:
        if app.id in seen:
            raise ConfigError(f"applications: duplicate application id {app.id!r}; ids must be unique")
        seen.add(app.id)
    activations = _activations(raw.get("activations"), base_dir, seen)
    return Config(applications, activations, _state(raw.get("state")))


_REDIS_URL = re.compile(r"^rediss?://(?:[^@/]*@)?[^/:@]+(?::\d{1,5})?(?:/(\d{1,2}))?/?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _state(raw: Any) -> StateStore | None:
    """`state: {redis: "redis://HOST:PORT/DB"}`, or None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError('state: expected a mapping, e.g. state: {redis: "redis://127.0.0.1:6379/0"}')
    refuse_unknown("state", raw, {"redis"})
    url = raw.get("redis")
    if not isinstance(url, str) or not _REDIS_URL.match(url):
        raise ConfigError(f"state.redis: expected redis://HOST:PORT/DB (or rediss://), got {url!r}")
    return StateStore(url)


def _application(index: int, entry: Any, base_dir: Path,
                 environ: Mapping[str, str]) -> Application:
    where = f"applications[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with id, permissions and sink")
    app_id = entry.get("id")
    if not isinstance(app_id, str) or not _APPLICATION_ID.match(app_id):
        raise ConfigError(f"{where}.id: expected 1-63 letters, digits, '.', '_' or '-', "
                          f"got {app_id!r}")
    refuse_unknown(f"applications[{app_id}]", entry,
                   {"id", "permissions", "sink", "vehicle_ids", "vehicle_id_secret_env",
                    "api_keys_env", "geofences", "geofence_hysteresis_m"})
    permissions = entry.get("permissions")
    if not isinstance(permissions, list) or not permissions \
            or not all(isinstance(p, str) for p in permissions):
        raise ConfigError(f"applications[{app_id}].permissions: expected a non-empty list of "
                          f"`capability.property` or `capability.*`")
    permitted: dict[str, set[str]] = {}
    for pattern in permissions:
        try:
            keys = expand_permission(pattern)
        except ValueError as error:
            raise ConfigError(f"applications[{app_id}].permissions: {error}") from None
        for key in keys:
            capability, prop = key.split(".", 1)
            permitted.setdefault(capability, set()).add(prop)
    if "sink" not in entry:
        raise ConfigError(f"applications[{app_id}].sink: missing; e.g. "
                          f"sink: {{type: file, path: out/{app_id}}}")
    sink_options = _resolve_local_path(entry["sink"], base_dir)
    _, batching = build_sink(app_id, sink_options)
    api_keys_env = entry.get("api_keys_env")
    if api_keys_env is not None and (not isinstance(api_keys_env, str)
                                     or not _ENV_NAME.match(api_keys_env)):
        raise ConfigError(f"applications[{app_id}].api_keys_env: expected the name of an "
                          f"environment variable, got {api_keys_env!r}")
    return Application(app_id, {c: frozenset(p) for c, p in permitted.items()},
                       sink_options, batching, _vehicle_id_secret(app_id, entry, environ),
                       api_keys_env, _geofences(app_id, entry, permitted))


def _geofences(app_id: str, entry: dict, permitted: dict[str, set[str]]) -> tuple:
    """`geofences:` with the application's default `geofence_hysteresis_m`; they need the
    location permission (crossings reveal where the car is) and a sink that delivers JSON."""
    where = f"applications[{app_id}]"
    default = (parse_hysteresis(entry["geofence_hysteresis_m"], f"{where}.geofence_hysteresis_m")
               if "geofence_hysteresis_m" in entry else DEFAULT_HYSTERESIS_M)
    fences = parse_geofences(entry.get("geofences"), f"{where}.geofences", default)
    if not fences:
        return fences
    if "coordinates" not in permitted.get("vehicle_location", ()):
        raise ConfigError(f"{where}.geofences: need the permission vehicle_location.coordinates "
                          f"(add it to permissions, or remove the geofences)")
    sink = entry["sink"]
    if isinstance(sink, dict) and sink.get("format") == "avro":
        raise ConfigError(f"{where}.geofences: the sink's format avro holds documents only; "
                          f"use format: jsonl to receive geofence events")
    return fences


def _vehicle_id_secret(app_id: str, entry: dict, environ: Mapping[str, str]) -> bytes | None:
    """`vehicle_ids: pseudonymous` needs `vehicle_id_secret_env`; `vin` (the default) none."""
    where = f"applications[{app_id}]"
    mode = entry.get("vehicle_ids", "vin")
    if mode not in VEHICLE_ID_MODES:
        raise ConfigError(f"{where}.vehicle_ids: expected one of {', '.join(VEHICLE_ID_MODES)}, "
                          f"got {mode!r}")
    if mode == "vin":
        if "vehicle_id_secret_env" in entry:
            raise ConfigError(f"{where}.vehicle_id_secret_env: only used with "
                              f"vehicle_ids: pseudonymous")
        return None
    if "vehicle_id_secret_env" not in entry:
        raise ConfigError(f"{where}.vehicle_id_secret_env: vehicle_ids: pseudonymous needs the "
                          f"name of an environment variable holding the application's secret")
    return secret_from_env(entry["vehicle_id_secret_env"], f"{where}.vehicle_id_secret_env",
                           environ)


def _resolve_local_path(options: Any, base_dir: Path) -> Any:
    """A sink's relative local `path` is relative to the configuration file."""
    if not isinstance(options, dict) or not isinstance(options.get("path"), str) \
            or "://" in options["path"] or Path(options["path"]).is_absolute():
        return options
    return {**options, "path": str((base_dir / options["path"]).resolve())}


def _activations(raw: Any, base_dir: Path, app_ids: set[str]) -> tuple[ActivationEvent, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        path = base_dir / raw if not Path(raw).is_absolute() else Path(raw)
        if not path.exists():
            raise ConfigError(f"activations: file {path} does not exist")
        records: Iterable[tuple[str, Any]] = _jsonl_records(path)
    elif isinstance(raw, list):
        records = ((f"activations[{i}]", r) for i, r in enumerate(raw))
    else:
        raise ConfigError("activations: expected a JSON-lines file name or a list of events")
    events = []
    for where, record in records:
        try:
            event = parse_activation(record)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
        if event.application_id not in app_ids:
            raise ConfigError(f"{where}: unknown application {event.application_id!r}; "
                              f"configured: {', '.join(sorted(app_ids))}")
        events.append(event)
    return tuple(events)


def _jsonl_records(path: Path) -> Iterable[tuple[str, Any]]:
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield f"activations {path}:{number}", orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise ConfigError(f"activations {path}:{number}: not JSON: {error}") from None
