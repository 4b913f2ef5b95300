"""Source mappers, found by source name.

`MAPPERS` maps each raw envelope's `source` to its mapper's pure
``map_payload(payload, received_at_ms) -> MapResult`` (see `base.py`).

Adding a source:

1. Write ``fleetstream/mappers/<name>.py`` with ``SOURCE = "<name>"`` and
   ``map_payload``, built from the readers and helpers in `entries.py`: a table
   from each source field to its catalogue property and reader, and a short
   function for the message's shape. A binary format's schema goes to
   ``mappers/proto/`` (generated code committed, see `tesla_telemetry`); a
   source whose transport carries several kinds of record names them in
   ``RECORD_TYPES`` and reads the envelope's `record_type` (DATA-CONTRACTS §1).
2. Add the module to ``_MODULES`` below.
3. Add ``tests/test_mapper_<name>.py`` with golden payloads for every field, and
   a valid sample payload to ``tests/test_mappers_fuzz.py`` (JSON sources) or a
   fuzz test of its own (binary ones).
"""
from __future__ import annotations

from typing import Mapping

from fleetstream.mappers import bmw, mercedes, smartcar, tesla, tesla_telemetry
from fleetstream.mappers.base import MapPayload

_MODULES = (tesla, bmw, mercedes, smartcar, tesla_telemetry)

#: source name -> map_payload
MAPPERS: Mapping[str, MapPayload] = {module.SOURCE: module.map_payload for module in _MODULES}

#: source name -> its record types, for the sources whose transport carries several
#: (one raw topic each: see `fleetstream.io.kafka.transforms.record_topics`)
RECORD_TYPES: Mapping[str, tuple[str, ...]] = {
    module.SOURCE: module.RECORD_TYPES for module in _MODULES if hasattr(module, "RECORD_TYPES")}

#: sources whose payloads are binary (`BINARY = True`): their dead letters always hold
#: `payload_b64`, even when the bytes happen to be UTF-8
BINARY_SOURCES: frozenset[str] = frozenset(
    module.SOURCE for module in _MODULES if getattr(module, "BINARY", False))
