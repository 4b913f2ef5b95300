"""The delivered document (DATA-CONTRACTS §4) and its deterministic message id."""
from __future__ import annotations

import hashlib
from typing import Any

import orjson

VERSION = 1


def message_id(source_message_id: str, application_id: str) -> str:
    """The id a customer sees: a pure function of the source message and the application."""
    return hashlib.blake2b(f"{source_message_id}/{application_id}".encode(),
                           digest_size=16).hexdigest()


def document_json(application_id: str, vin: str, brand: str, msg_id: str,
                  data: dict[str, Any] | orjson.Fragment, late: bool = False) -> bytes:
    """The serialised document; `"late": true` marks one delivered after a newer one.

    `data` may come serialised already, as an `orjson.Fragment`.
    """
    document: dict[str, Any] = {"version": VERSION, "message_id": msg_id,
                                "application_id": application_id, "vin": vin,
                                "brand": brand, "data": data}
    if late:
        document["late"] = True
    return orjson.dumps(document)
