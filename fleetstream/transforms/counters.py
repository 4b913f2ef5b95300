"""Beam metric counters counted in memory per bundle and flushed once per bundle.

Incrementing a Beam counter per element costs more than the mapping itself on
the fast path; `BundleCounts` adds plain ints and hands Beam the totals.
"""
from __future__ import annotations

from collections import Counter

from apache_beam.metrics import Metrics

from fleetstream.transforms.counter_names import NAMESPACE


class BundleCounts:
    """Counts named `<scope>.<what>` (e.g. `tesla.ok`, `app/fleet-a.delivered`)."""

    def __init__(self) -> None:
        self._pending: Counter[str] = Counter()
        self._counters: dict = {}

    def add(self, name: str, amount: int = 1) -> None:
        self._pending[name] += amount

    def flush(self) -> None:
        """Report the totals to Beam; call from finish_bundle (and timers' ends)."""
        for name, amount in self._pending.items():
            counter = self._counters.get(name)
            if counter is None:
                counter = self._counters[name] = Metrics.counter(NAMESPACE, name)
            counter.inc(amount)
        self._pending.clear()
