"""ReportProgress: a pass-through step that logs how many elements went by, and how fast."""
from __future__ import annotations

import sys
import time
from typing import Iterable, TypeVar

import apache_beam as beam

T = TypeVar("T")


class ReportProgress(beam.PTransform):
    """Print `<label>: N so far (R/s)` to stderr every `every` elements (per worker)."""

    def __init__(self, label: str, every: int = 100_000) -> None:
        super().__init__()
        self._label = label
        self._every = every

    def expand(self, items: beam.PCollection[T]) -> beam.PCollection[T]:
        return items | "Progress" >> beam.ParDo(_ProgressFn(self._label, self._every))


class _ProgressFn(beam.DoFn):
    def __init__(self, label: str, every: int) -> None:
        self._label = label
        self._every = every

    def setup(self) -> None:
        self._seen = 0
        self._started = time.monotonic()

    def process(self, item: T) -> Iterable[T]:
        self._seen += 1
        if self._seen % self._every == 0:
            rate = self._seen / max(time.monotonic() - self._started, 1e-9)
            print(f"{self._label}: {self._seen:,} so far ({rate:,.0f}/s)", file=sys.stderr,
                  flush=True)
        yield item
