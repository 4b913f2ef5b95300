"""The REST poller's rules as plain functions: its settings, which vehicles it may call,
when each call is due, what counts as a change, and how long to wait after trouble.

No network and no clock of their own (times are passed in, epoch milliseconds), so that
they are tested alone (tests/test_poll_rules.py); `fleetstream.ingest.poller` applies them.

- **Who**: a vehicle is polled while its activation for at least one application is
  `approved`. Per (vin, application) the newest `at` wins; on equal `at` the stricter
  status (revoked > rejected > pending > approved; unknown statuses strictest) - the rule
  of docs/permissions.md, kept equal to `transforms.activations.supersedes` by a test
  (the ingest package may not import transforms).
- **When**: calls are spread over the interval: a vehicle's first call comes at a stable
  phase of the VIN within one interval, later ones one interval after the previous one.
  After a restart a vehicle resumes at its last call plus the interval; one that is
  overdue by then is spread over the next interval instead of called at once.
- **Changed**: a 304 is no change; a 200 whose body hashes as the last one is none either
  (an API without ETags, or one that ignores If-None-Match).
- **Trouble**: 429 pauses every call to the OEM until its Retry-After has passed; 5xx,
  timeouts and refused connections back the vehicle off exponentially with jitter.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from random import Random
from typing import Any, Mapping

from fleetstream.schemas.activations import APPROVED, ActivationEvent, supersedes
from fleetstream.schemas.errors import ConfigError, refuse_unknown
from fleetstream.schemas.secrets import secret_from_env
from fleetstream.settings.topics import ACTIVATIONS_TOPIC

DEFAULT_STATE_TOPIC = "ingest-poll-state"
POLL_KEYS = {"url", "interval_s", "concurrency", "rate_per_s", "timeout_s", "auth",
             "activations_topic", "state_topic", "vin_prefixes", "max_backoff_s"}


@dataclass(frozen=True)
class PollSettings:
    """One source's `poll:` section, checked."""

    url: str                               # with `{vin}`
    interval_s: float = 30.0
    concurrency: int = 4
    rate_per_s: float = 10.0
    timeout_s: float = 10.0
    max_backoff_s: float = 300.0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    activations_topic: str = ACTIVATIONS_TOPIC
    state_topic: str = DEFAULT_STATE_TOPIC
    #: only VINs starting with one of these (the OEM's WMIs); empty: every approved VIN
    vin_prefixes: tuple[str, ...] = ()

    def polls(self, vin: str) -> bool:
        return not self.vin_prefixes or vin.startswith(self.vin_prefixes)


def parse_poll_settings(raw: Any, where: str, environ: Mapping[str, str]) -> PollSettings:
    """A source's `poll:` section; ConfigError naming `<where>.<key>` and the fix."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with at least url, got "
                          f"{type(raw).__name__}")
    refuse_unknown(where, raw, POLL_KEYS)
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) \
            or "{vin}" not in url:
        raise ConfigError(f"{where}.url: expected an http(s) URL holding {{vin}}, e.g. "
                          f"\"https://api.example.com/vehicles/{{vin}}\", got {url!r}")
    numbers = {key: _positive(raw, key, default, where, whole)
               for key, default, whole in (("interval_s", 30.0, False), ("concurrency", 4, True),
                                           ("rate_per_s", 10.0, False),
                                           ("timeout_s", 10.0, False),
                                           ("max_backoff_s", 300.0, False))}
    topics = {}
    for key, default in (("activations_topic", ACTIVATIONS_TOPIC),
                         ("state_topic", DEFAULT_STATE_TOPIC)):
        topics[key] = raw.get(key, default)
        if not isinstance(topics[key], str) or not topics[key]:
            raise ConfigError(f"{where}.{key}: expected a Kafka topic name, got "
                              f"{topics[key]!r}")
    prefixes = raw.get("vin_prefixes", [])
    if not isinstance(prefixes, list) or not all(isinstance(p, str) and p for p in prefixes):
        raise ConfigError(f"{where}.vin_prefixes: expected a list of VIN prefixes, e.g. "
                          f"[W1K], got {prefixes!r}")
    return PollSettings(url, **numbers, headers=_auth_headers(raw.get("auth"), f"{where}.auth",
                                                              environ),
                        **topics, vin_prefixes=tuple(prefixes))


def _positive(raw: Mapping[str, Any], key: str, default: float, where: str,
              whole: bool) -> Any:
    value = raw.get(key, default)
    kind = int if whole else (int, float)
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where}.{key}: expected a {'whole ' if whole else ''}number "
                          f"above 0, got {value!r}")
    return value


def _auth_headers(raw: Any, where: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The headers that authenticate a call: `{type: bearer, token_env: VAR}` or
    `{type: header, header: X-Api-Key, value_env: VAR}` or `{type: none}` (the default)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{type: bearer, "
                          f"token_env: OEM_TOKEN}}, got {raw!r}")
    kind = raw.get("type")
    if kind == "none":
        refuse_unknown(where, raw, {"type"})
        return {}
    if kind == "bearer":
        refuse_unknown(where, raw, {"type", "token_env"})
        token = secret_from_env(raw.get("token_env"), f"{where}.token_env", environ)
        return {"Authorization": f"Bearer {token.decode()}"}
    if kind == "header":
        refuse_unknown(where, raw, {"type", "header", "value_env"})
        if not isinstance(raw.get("header"), str) or not raw["header"]:
            raise ConfigError(f"{where}.header: name the header, e.g. X-Api-Key")
        value = secret_from_env(raw.get("value_env"), f"{where}.value_env", environ)
        return {raw["header"]: value.decode()}
    raise ConfigError(f"{where}.type: one of bearer, header, none, got {kind!r}")


# --- who is polled ---------------------------------------------------------------------

@dataclass
class ApprovedVehicles:
    """The winning activation event per (vin, application), and the VINs approved for at
    least one application."""

    events: dict[tuple[str, str], ActivationEvent] = field(default_factory=dict)
    approved: dict[str, set[str]] = field(default_factory=dict)   # vin -> applications

    def offer(self, event: ActivationEvent) -> None:
        pair = (event.vin, event.application_id)
        if not supersedes(event, self.events.get(pair)):
            return
        self.events[pair] = event
        applications = self.approved.setdefault(event.vin, set())
        if event.status == APPROVED:
            applications.add(event.application_id)
        else:
            applications.discard(event.application_id)
        if not applications:
            del self.approved[event.vin]

    def forget(self, vin: str, application_id: str) -> None:
        """A tombstone: the pair has no event (and delivers nothing)."""
        self.events.pop((vin, application_id), None)
        applications = self.approved.get(vin, set())
        applications.discard(application_id)
        if not applications:
            self.approved.pop(vin, None)

    def __contains__(self, vin: str) -> bool:
        return vin in self.approved


# --- when ------------------------------------------------------------------------------

def phase(vin: str) -> float:
    """A stable share of the interval in [0, 1) for `vin`: calls spread over the interval."""
    digest = hashlib.blake2b(vin.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def first_due_ms(vin: str, now_ms: int, interval_ms: int, last_poll_ms: int | None) -> int:
    """When a newly approved (or restarted) vehicle's first call is due: its last call plus
    the interval, else (never called, or overdue) its phase within the next interval."""
    if last_poll_ms is not None and last_poll_ms + interval_ms >= now_ms:
        return last_poll_ms + interval_ms
    return now_ms + int(phase(vin) * interval_ms)


def next_due_ms(due_ms: int, now_ms: int, interval_ms: int) -> int:
    """The call after one due at `due_ms`: one interval later, keeping the spread; a vehicle
    that fell a whole interval behind starts again from now rather than catching up."""
    following = due_ms + interval_ms
    return following if following > now_ms else now_ms + interval_ms


def backoff_s(failures: int, interval_s: float, max_backoff_s: float, rng: Random) -> float:
    """How long a vehicle waits after its `failures`-th failure in a row (1, 2, ...): the
    interval doubled per failure up to `max_backoff_s`, half of it random (jitter)."""
    ceiling = min(max_backoff_s, interval_s * 2 ** max(0, failures - 1))
    return ceiling / 2 + rng.random() * ceiling / 2


# --- what changed ----------------------------------------------------------------------

@dataclass(frozen=True)
class SeenState:
    """What the poller last saw of a vehicle (kept in the state topic)."""

    etag: str | None = None
    body_hash: str | None = None
    polled_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"etag": self.etag, "hash": self.body_hash, "polled_ms": self.polled_ms}

    @classmethod
    def from_json(cls, raw: Any) -> "SeenState":
        if not isinstance(raw, dict):
            raise ValueError("a poll state is a JSON object {etag, hash, polled_ms}")
        polled = raw.get("polled_ms")
        return cls(raw.get("etag") if isinstance(raw.get("etag"), str) else None,
                   raw.get("hash") if isinstance(raw.get("hash"), str) else None,
                   polled if isinstance(polled, int) else None)


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def changed(seen: SeenState, status: int, etag: str | None, body: bytes) -> bool:
    """Whether a response carries data not yet written: a 304 does not; a 200 does unless
    its body is the one last written (same ETag, or same hash)."""
    if status == 304:
        return False
    if etag is not None and etag == seen.etag:
        return False
    return body_hash(body) != seen.body_hash
