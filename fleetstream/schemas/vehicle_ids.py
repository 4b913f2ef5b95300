"""Per-application vehicle ids (DATA-CONTRACTS §6, §10, §11): the VIN, or a pseudonym.

An application configured with `vehicle_ids: pseudonymous` never sees a VIN: its
documents, geofence events and API answers carry `pseudonymous_id(secret, vin)`,
a keyed hash with the application's own secret, so the id is stable for a car and
differs between applications; without the secret it cannot be turned back into a VIN.
"""
from __future__ import annotations

import hashlib
import hmac

VEHICLE_ID_MODES = ("vin", "pseudonymous")
#: hex characters kept of the HMAC-SHA256: 128 bits, no collisions in any real fleet
PSEUDONYM_HEX_CHARS = 32
#: a pseudonym starts with this, so it can never be mistaken for a (17-character) VIN
PSEUDONYM_PREFIX = "p-"


def pseudonymous_id(secret: bytes, vin: str) -> str:
    """The application's stable id for `vin`: `p-` + 32 hex chars of HMAC-SHA256(secret, VIN)."""
    digest = hmac.new(secret, vin.encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_CHARS]


def vehicle_id(secret: bytes | None, vin: str) -> str:
    """What an application sees for `vin`: the pseudonym when it has a secret, else the VIN."""
    return vin if secret is None else pseudonymous_id(secret, vin)
