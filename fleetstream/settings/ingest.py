"""The ingest gateway's settings (DATA-CONTRACTS §8), validated at start-up.

    kafka: {bootstrap: 127.0.0.1:9092}
    http: {listen: 127.0.0.1:8090, max_body_bytes: 1048576}   # also body_timeout_s, tls
    grpc: {listen: 127.0.0.1:8091}   # optional: the gRPC push listener (docs/ingest.md)
    sources:
      smartcar:                      # source name = mapper name; topic defaults to raw.<source>
        topic: raw.smartcar
        push: {auth: {type: hmac-sha256, header: SC-Signature, secret_env: SMARTCAR_SECRET}}
      mercedes:
        push: {auth: {type: bearer, token_env: MERCEDES_TOKEN}}
      bmw:
        mqtt: {url: "mqtt://127.0.0.1:1883", topic: "bmw/+/telemetry"}

Each source has a `topic` and any of: `push` (HTTP push, checked here), one section per
bridge kind (`mqtt`, `amqp`, `sqs`, `kinesis`, `pubsub`, `kafka`: kept as given and checked
by the bridge's own class, `fleetstream.ingest.bridges`), and `poll` (the REST poller,
checked by `fleetstream.ingest.poller`). Secrets come only from environment variables:
a variable that is not set is a ConfigError naming it (never its value).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fleetstream.schemas.errors import ConfigError, refuse_unknown
from fleetstream.schemas.secrets import secret_from_env
from fleetstream.settings.topics import raw_topic
from fleetstream.settings.yaml_file import read_yaml

#: bridge kinds a source section may have (each one module of fleetstream.ingest.bridges)
BRIDGE_KINDS = ("mqtt", "amqp", "sqs", "kinesis", "pubsub", "kafka")
AUTH_TYPES = ("hmac-sha256", "bearer", "none")
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_BODY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PushAuth:
    """How a source's HTTP pushes prove who sent them; `secret` is read from the environment."""

    type: str                      # hmac-sha256 | bearer | none
    secret: bytes = field(default=b"", repr=False)
    header: str = "Authorization"  # hmac-sha256: the header holding the hex signature


@dataclass(frozen=True)
class SourceSettings:
    """One source: its raw topic and the ways its data comes in."""

    name: str
    topic: str
    push: PushAuth | None = None
    #: bridge kind -> its section, as given (the bridge class checks it)
    bridges: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the REST poller's section, as given (the poller checks it)
    poll: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: optional mutual TLS: the listener's certificate and key, the CA that signs client
    #: certificates, and client certificate subject (CN) -> the sources it may push to
    tls: Mapping[str, Any] | None = None
    #: a request body must have arrived this many seconds after its headers (else 408)
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S


@dataclass(frozen=True)
class GrpcSettings:
    """The gRPC push listener; its largest payload is `http.max_body_bytes`."""

    host: str = "127.0.0.1"
    port: int = 8091


@dataclass(frozen=True)
class IngestSettings:
    """Everything `fleetstream ingest` needs."""

    bootstrap_servers: str
    http: HttpSettings
    sources: Mapping[str, SourceSettings]
    #: the gRPC push listener, when the settings have a `grpc:` section
    grpc: GrpcSettings | None = None


def load_ingest_settings(path: str | Path, environ: Mapping[str, str] | None = None
                         ) -> IngestSettings:
    """Read and validate ingest.yaml; ConfigError names the key at fault and the fix."""
    path = Path(path)
    return parse_ingest_settings(read_yaml(path, "ingest settings file") or {}, str(path),
                                 os.environ if environ is None else environ)


def parse_ingest_settings(raw: Any, where: str = "ingest settings",
                          environ: Mapping[str, str] | None = None) -> IngestSettings:
    environ = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with kafka, http and sources")
    refuse_unknown(where, raw, {"kafka", "http", "grpc", "sources"})
    kafka = _mapping(raw.get("kafka") or {}, f"{where}: kafka")
    refuse_unknown(f"{where}: kafka", kafka, {"bootstrap"})
    bootstrap = kafka.get("bootstrap", "127.0.0.1:9092")
    if not isinstance(bootstrap, str) or not bootstrap:
        raise ConfigError(f"{where}: kafka.bootstrap must be HOST:PORT[,HOST:PORT...]")
    sources = _mapping(raw.get("sources"), f"{where}: sources")
    if not sources:
        raise ConfigError(f"{where}: sources must name at least one source, e.g. "
                          f"sources: {{smartcar: {{push: {{auth: {{type: bearer, "
                          f"token_env: SMARTCAR_TOKEN}}}}}}}}")
    return IngestSettings(bootstrap, _http(raw.get("http") or {}, f"{where}: http"),
                          {name: _source(str(name), section, f"{where}: sources.{name}", environ)
                           for name, section in sources.items()},
                          _grpc(raw["grpc"], f"{where}: grpc") if "grpc" in raw else None)


def _http(raw: Any, where: str) -> HttpSettings:
    section = _mapping(raw, where)
    refuse_unknown(where, section, {"listen", "max_body_bytes", "body_timeout_s", "tls"})
    host, port = _listen(section.get("listen", "127.0.0.1:8090"), f"{where}.listen")
    max_body = section.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if not isinstance(max_body, int) or isinstance(max_body, bool) or max_body < 1:
        raise ConfigError(f"{where}.max_body_bytes: expected a whole number of bytes >= 1, "
                          f"got {max_body!r}")
    body_timeout = section.get("body_timeout_s", DEFAULT_BODY_TIMEOUT_S)
    if not isinstance(body_timeout, (int, float)) or isinstance(body_timeout, bool) \
            or body_timeout <= 0:
        raise ConfigError(f"{where}.body_timeout_s: expected seconds > 0, got {body_timeout!r}")
    tls = section.get("tls")
    if tls is not None:
        tls = _mapping(tls, f"{where}.tls")
        refuse_unknown(f"{where}.tls", tls, {"cert", "key", "client_ca", "subjects"})
        for key in ("cert", "key", "client_ca"):
            if not isinstance(tls.get(key), str) or not Path(tls[key]).exists():
                raise ConfigError(f"{where}.tls.{key}: expected the path of an existing PEM "
                                  f"file, got {tls.get(key)!r}")
        subjects = tls.get("subjects")
        if subjects is not None and not (
                isinstance(subjects, dict) and all(
                    isinstance(names, list) and all(isinstance(n, str) for n in names)
                    for names in subjects.values())):
            raise ConfigError(f"{where}.tls.subjects: expected client certificate CN -> list "
                              f"of sources, e.g. {{fleet-gw.example.com: [smartcar]}}")
    return HttpSettings(host, port, max_body, tls, float(body_timeout))


def _grpc(raw: Any, where: str) -> GrpcSettings:
    section = _mapping(raw or {}, where)
    refuse_unknown(where, section, {"listen"})
    return GrpcSettings(*_listen(section.get("listen", "127.0.0.1:8091"), f"{where}.listen"))


def _listen(raw: Any, where: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); ConfigError naming `where` otherwise."""
    host, _, port = str(raw).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected HOST:PORT, got {raw!r}")
    return host, int(port)


def _source(name: str, raw: Any, where: str, environ: Mapping[str, str]) -> SourceSettings:
    section = _mapping(raw or {}, where)
    refuse_unknown(where, section, {"topic", "push", "poll", *BRIDGE_KINDS})
    topic = section.get("topic", raw_topic(name))
    if not isinstance(topic, str) or not topic:
        raise ConfigError(f"{where}.topic: expected a Kafka topic name, got {topic!r}")
    push = _push(section["push"], f"{where}.push", environ) if "push" in section else None
    bridges = {kind: _mapping(section[kind], f"{where}.{kind}")
               for kind in BRIDGE_KINDS if kind in section}
    poll = _mapping(section["poll"], f"{where}.poll") if "poll" in section else None
    if push is None and not bridges and poll is None:
        raise ConfigError(f"{where}: no way in; add push:, poll: or one of "
                          f"{', '.join(BRIDGE_KINDS)}")
    return SourceSettings(name, topic, push, bridges, poll)


def _push(raw: Any, where: str, environ: Mapping[str, str]) -> PushAuth:
    section = _mapping(raw or {}, where)
    refuse_unknown(where, section, {"auth"})
    auth = _mapping(section.get("auth"), f"{where}.auth")
    kind = auth.get("type")
    if kind not in AUTH_TYPES:
        raise ConfigError(f"{where}.auth.type: one of {', '.join(AUTH_TYPES)}, got {kind!r}")
    if kind == "none":
        refuse_unknown(f"{where}.auth", auth, {"type"})
        return PushAuth("none")
    secret_key = "secret_env" if kind == "hmac-sha256" else "token_env"
    refuse_unknown(f"{where}.auth", auth, {"type", secret_key, "header"}
                   if kind == "hmac-sha256" else {"type", secret_key})
    return PushAuth(kind, secret_from_env(auth.get(secret_key), f"{where}.auth.{secret_key}",
                                          environ),
                    auth.get("header", "X-Signature") if kind == "hmac-sha256"
                    else "Authorization")


def _mapping(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw
