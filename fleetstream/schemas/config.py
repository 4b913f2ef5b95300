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

__all__ = ["Application", "Config"]


@dataclass(frozen=True)
class Application:
    """One customer application: what it may see and where it is delivered."""

    id: str
    #: capability -> permitted property names
    permitted: Mapping[str, frozenset[str]]
    sink_options: Mapping[str, Any]
    batching: Batching


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    applications: tuple[Application, ...]
    activations: tuple[ActivationEvent, ...] = field(default=())

    def application(self, application_id: str) -> Application:
        return next(a for a in self.applications if a.id == application_id)
