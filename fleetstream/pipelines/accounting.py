"""The accounting summary: where every message read went, from the job's Beam counters.

Per source: read = delivered + filtered + failed + ignored + duplicate, where
delivered means sent to at least one application, filtered to none, failed
dead-lettered whole, ignored carried no data by design (smartcar VERIFY,
VEHICLE_ERROR) and duplicate dropped as an exact repeat. Partial messages are
delivered (or filtered) and also dead-lettered for their unreadable fields.
Per application, `documents` counts what its sink was written: the documents it was
`delivered` plus its `geofence_events`.
Envelopes a replay's filters skip are never read; a `skipped` line counts them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from apache_beam.runners.runner import PipelineResult

from fleetstream.transforms.counter_names import APP_SCOPE, NAMESPACE, REPLAY_SCOPE

SOURCE_COLUMNS = ("read", "delivered", "filtered", "failed", "ignored", "duplicate", "partial",
                  "late")
APPLICATION_COLUMNS = ("delivered", "filtered", "geofence_events", "documents", "batches",
                       "retries", "failed_batches")


@dataclass
class Accounting:
    """Counters by scope (a source or an application) and name."""

    counters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: PipelineResult) -> "Accounting":
        counters: dict[str, dict[str, int]] = defaultdict(dict)
        for metric in result.metrics().query()["counters"]:
            if metric.key.metric.namespace != NAMESPACE:
                continue
            scope, _, name = metric.key.metric.name.rpartition(".")
            value = metric.committed if metric.committed is not None else metric.attempted
            counters[scope][name] = counters[scope].get(name, 0) + int(value or 0)
        return cls(dict(counters))

    def get(self, scope: str, name: str) -> int:
        return self.counters.get(scope, {}).get(name, 0)

    def sources(self) -> list[str]:
        return sorted(s for s, c in self.counters.items()
                      if "read" in c and not s.startswith(APP_SCOPE))

    def balanced(self, source: str) -> bool:
        """True when every message read from `source` is accounted for."""
        return self.get(source, "read") == sum(
            self.get(source, name) for name in ("delivered", "filtered", "failed", "ignored",
                                                "duplicate"))

    def total(self, name: str) -> int:
        return sum(self.get(source, name) for source in self.sources())

    def skipped(self) -> int:
        """Envelopes a replay's filters left out before mapping."""
        return self.get(REPLAY_SCOPE, "skipped")

    def render(self, applications: Iterable[str]) -> str:
        """The summary table printed at the end of a job."""
        lines = [_row("source", SOURCE_COLUMNS + ("balanced",))]
        for source in self.sources():
            lines.append(_row(source, [self.get(source, c) for c in SOURCE_COLUMNS]
                              + ["yes" if self.balanced(source) else "NO"]))
        lines.append(_row("total", [self.total(c) for c in SOURCE_COLUMNS]
                          + ["yes" if all(map(self.balanced, self.sources())) else "NO"]))
        lines += ["", _row("application", APPLICATION_COLUMNS)]
        for app in applications:
            lines.append(_row(app, [self.get(APP_SCOPE + app, c) for c in APPLICATION_COLUMNS]))
        read, dead = self.total("read"), self.total("failed") + self.total("partial")
        lines += ["", f"read {read} = delivered {self.total('delivered')} + filtered "
                      f"{self.total('filtered')} + dead-lettered {self.total('failed')} + ignored "
                      f"{self.total('ignored')} + duplicates {self.total('duplicate')}"
                      f"   ({dead} dead letters incl. {self.total('partial')} partial)"]
        replay = self.counters.get(REPLAY_SCOPE, {})
        if "files" in replay:
            lines.append(f"files read: {replay['files']}")
        if "skipped" in replay:
            lines.append(f"skipped {self.skipped()} envelopes outside the replay filters "
                         f"(not read)")
        if replay.get("broken_files"):
            lines.append(f"{replay['broken_files']} file(s) broke off before their end (corrupt "
                         f"or truncated): see the ingest-stage dead letters naming them")
        return "\n".join(lines)


def _row(label: str, cells: Iterable[object]) -> str:
    return f"{label:<18}" + "".join(f"{str(c):>15}" for c in cells)
