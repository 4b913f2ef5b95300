"""ReadEnvelopes with batches=True: the same envelopes as one by one, in lists of at most
BATCH_ENVELOPES, and the same dead letters."""
from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import orjson
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from fleetstream.io.files import envelope_files
from fleetstream.io.files.envelope_files import UNREADABLE, ReadEnvelopes, match_envelope_files


def _write_envelopes(path: Path, count: int, bad_every: int) -> None:
    with open(path, "wb") as out:
        for i in range(count):
            if i % bad_every == 0:
                out.write(b"not an envelope\n")
            out.write(orjson.dumps({"source": "tesla", "received_at": 1_700_000_000_000 + i,
                                    "payload": f'{{"n": {i}}}'}) + b"\n")


def test_batched_read_gives_the_same_envelopes_in_bounded_lists(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setattr(envelope_files, "BATCH_ENVELOPES", 7)
    _write_envelopes(tmp_path / "raw.jsonl", 50, bad_every=20)
    files = match_envelope_files([str(tmp_path / "*.jsonl")])
    with TestPipeline() as pipeline:
        one_by_one = pipeline | "One" >> ReadEnvelopes(files)
        batched = pipeline | "Lists" >> ReadEnvelopes(files, batches=True)
        sizes = batched.envelopes | beam.Map(len)
        assert_that(sizes, lambda got: _check_sizes(got, 7, 50), label="ListSizes")
        flat = batched.envelopes | beam.FlatMap(lambda envelopes: envelopes)
        expected = [(1_700_000_000_000 + i, f'{{"n": {i}}}'.encode()) for i in range(50)]
        for name, envelopes in (("one", one_by_one.envelopes), ("lists", flat)):
            assert_that(envelopes | f"Fields{name}" >> beam.Map(
                lambda e: (e.received_at_ms, e.payload)), equal_to(expected), label=f"Same{name}")
        assert_that(batched[UNREADABLE] | beam.Map(lambda d: d["payload"]),
                    equal_to(["not an envelope"] * 3), label="DeadLetters")


def _check_sizes(sizes: list[int], at_most: int, total: int) -> None:
    assert sum(sizes) == total and max(sizes) <= at_most, sizes
