"""Configuration (DATA-CONTRACTS §6): applications, their permissions and sinks, activations.

These are the validated values only; `fleetstream.settings.config` reads and
validates the YAML file, and `fleetstream.io.sinks.registry` builds each
application's sink from its `sink_options`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from fleetstream.schemas.activations import ActivationEvent
from fleetstream.schemas.delivery import Batching
from fleetstream.schemas.geofences import Geofence
from fleetstream.schemas.vehicle_ids import vehicle_id

__all__ = ["Application", "Config", "StateStore"]


@dataclass(frozen=True)
class Application:
    """One customer application: what it may see and where it is delivered."""

    id: str
    #: capability -> permitted property names
    permitted: Mapping[str, frozenset[str]]
    sink_options: Mapping[str, Any]
    batching: Batching
    #: `vehicle_ids: pseudonymous`: the secret its ids are derived with (see schemas.vehicle_ids);
    #: None: the application sees VINs
    vehicle_id_secret: bytes | None = field(default=None, repr=False)
    #: the environment variable holding its API keys, comma-separated (`fleetstream api`)
    api_keys_env: str | None = None
    #: its geofences (DATA-CONTRACTS §11), validated; crossings are delivered through its sink
    geofences: tuple[Geofence, ...] = ()

    def vehicle_id(self, vin: str) -> str:
        """The id this application sees for `vin` (the VIN, or its pseudonym)."""
        return vehicle_id(self.vehicle_id_secret, vin)


@dataclass(frozen=True)
class StateStore:
    """`state:` (DATA-CONTRACTS §10): where the latest state of every vehicle is kept."""

    #: redis://HOST:PORT/DB (the database number selects the database)
    redis: str


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    applications: tuple[Application, ...]
    activations: tuple[ActivationEvent, ...] = field(default=())
    #: None: no latest-state store is configured
    state: StateStore | None = None

    @property
    def redis_url(self) -> str | None:
        """Where the latest state and the geofence events' streams go; None without `state:`."""
        return self.state.redis if self.state is not None else None

    def application(self, application_id: str) -> Application:
        return next(a for a in self.applications if a.id == application_id)
