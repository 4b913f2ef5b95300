"""WriteLineFiles: byte lines to files, one per bundle, local or `s3://`.

    lines | WriteLineFiles("out/dead_letters/dead-letters", ".jsonl")

Each bundle's lines go to one file, `<prefix>-<hash of its content><suffix>`, written at
the bundle's end (a retried bundle writes the same name again); a bundle without lines
writes nothing. For small outputs of a batch job (its dead letters): a single step,
where Beam's `WriteToText` adds a dozen steps and their stages to the job, about a
second of a replay's fixed cost.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems


class WriteLineFiles(beam.PTransform):
    """Lines (bytes, no newline) -> one file per bundle under `prefix`."""

    def __init__(self, prefix: str, suffix: str) -> None:
        super().__init__()
        self._prefix = prefix
        self._suffix = suffix

    def expand(self, lines: beam.PCollection[bytes]) -> beam.PCollection:
        return lines | "WriteFilePerBundle" >> beam.ParDo(
            _WriteFilePerBundleFn(self._prefix, self._suffix))


class _WriteFilePerBundleFn(beam.DoFn):
    def __init__(self, prefix: str, suffix: str) -> None:
        self._prefix = prefix
        self._suffix = suffix

    def start_bundle(self) -> None:
        self._lines: list[bytes] = []

    def process(self, line: bytes) -> Iterable[None]:
        self._lines.append(line)
        return ()

    def finish_bundle(self) -> None:
        if not self._lines:
            return
        content = b"".join(line + b"\n" for line in self._lines)
        self._lines = []
        name = hashlib.blake2b(content, digest_size=12).hexdigest()
        with FileSystems.create(f"{self._prefix}-{name}{self._suffix}") as out:
            out.write(content)
