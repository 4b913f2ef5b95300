"""The one interface every source mapper implements.

A mapper is a module with `SOURCE` (the name in the raw envelope's `source`)
and a pure function `map_payload(payload, received_at_ms, record_type=None) ->
MapResult`. `record_type` is the envelope's (DATA-CONTRACTS §1): the kind of
record where the transport names it beside the payload (a fleet-telemetry
record's topic), passed only when the envelope has one; a source with one kind of
record may take two arguments, one with several declares them in `RECORD_TYPES`.
It never raises: whatever the input, it returns a result whose `outcome` says
what happened (DATA-CONTRACTS §2, §5):

- ``ok``: every recognised field was read;
- ``partial``: some entries carry a `format_error` failure, listed in `errors`;
- ``failed``: the message as a whole cannot be read; `data` is empty;
- ``ignored``: a message that carries no data by design (smartcar VERIFY or
  VEHICLE_ERROR events): counted, not delivered, not a dead letter.
"""
from __future__ import annotations

from typing import Protocol

from fleetstream.schemas.mapped import Data

OK = "ok"
PARTIAL = "partial"
FAILED = "failed"
IGNORED = "ignored"


class MapResult:
    """What a mapper made of one raw payload."""

    __slots__ = ("vin", "outcome", "data", "errors", "newest_ms")

    def __init__(self, vin: str | None, outcome: str, data: Data,
                 errors: list[dict[str, str]], newest_ms: int | None) -> None:
        self.vin = vin
        self.outcome = outcome
        self.data = data
        #: [{"field": <source field>, "reason": <human-readable reason>}]
        self.errors = errors
        #: epoch ms of the newest entry timestamp (orders a vehicle's documents)
        self.newest_ms = newest_ms

    def __repr__(self) -> str:
        return (f"MapResult(vin={self.vin!r}, outcome={self.outcome!r}, "
                f"data={self.data!r}, errors={self.errors!r}, newest_ms={self.newest_ms!r})")


def failed(reason: str, field: str = "payload", vin: str | None = None) -> MapResult:
    """A result for a message that cannot be read as a whole."""
    return MapResult(vin, FAILED, {}, [{"field": field, "reason": reason}], None)


class MapPayload(Protocol):
    """The signature of a mapper module's `map_payload`."""

    def __call__(self, payload: str | bytes, received_at_ms: int,
                 record_type: str | None = None) -> MapResult: ...
