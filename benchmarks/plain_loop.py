"""The pipeline's per-message work in a plain Python loop: the yardstick the benchmarks compare to.

    seconds, documents = run_plain_loop(envelopes, config)

For each raw envelope: map it with its source's mapper, then for each application
the vehicle is approved for, keep the permitted properties and serialise the
document. Everything a job does per message but ordering, batching, writing and
the runner's own work, with the same functions, on one core.
"""
from __future__ import annotations

import time
from typing import Iterable

from fleetstream.mappers import MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED
from fleetstream.schemas.config import Config
from fleetstream.schemas.document import document_json, message_id
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.transforms.activations import approved_table, newest_activations
from fleetstream.transforms.permissions import permitted_data


def run_plain_loop(envelopes: Iterable[RawEnvelope], config: Config) -> tuple[float, int]:
    """Seconds spent (including producing `envelopes`, when it is lazy) and documents made."""
    table = approved_table(newest_activations(config.activations))
    apps = [(a.id, a.permitted) for a in config.applications]
    documents = 0
    started = time.perf_counter()
    for envelope in envelopes:
        mapper = MAPPERS.get(envelope.source)
        if mapper is None:
            continue
        result = mapper(envelope.payload, envelope.received_at_ms)
        if result.outcome == FAILED or result.outcome == IGNORED:
            continue
        smid = envelope.source_message_id()
        approved = table.get(result.vin, ())
        for app_id, permitted in apps:
            if app_id not in approved:
                continue
            data = permitted_data(result.data, permitted)
            if data:
                msg_id = message_id(smid, app_id)
                document_json(app_id, result.vin, envelope.source, msg_id, data)
                documents += 1
    return time.perf_counter() - started, documents
