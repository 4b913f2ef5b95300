"""Mapping micro-benchmark: µs per simulator message and source for each step of the plain loop.

    python benchmarks/mapping_bench.py [--messages 40000] [--repeat 5] [--json]

Steps, as in `replay_bench.py`'s plain loop: `parse` (parse_envelope_line),
`map` (the source's mapper), `permit+doc` (source_message_id, then per approved
application permitted_data, message_id and document_json; every application is
approved for every vehicle). Each source's messages are cut into `--repeat`
consecutive chunks, each timed once per step so that no cache sees a message twice
(as in a real stream); each figure is the best chunk, since load on the machine
only ever adds time. Compare versions in the same run.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import orjson

from fleetstream.mappers import MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED
from fleetstream.schemas.document import document_json, message_id
from fleetstream.schemas.envelope import RawEnvelope, parse_envelope_line
from fleetstream.simulator import SOURCES, simulate

#: capability -> permitted properties, like replay_bench's two applications
APPLICATIONS: list[tuple[str, dict[str, frozenset[str]]]] = [
    ("fleet-manager", {
        "diagnostics": frozenset(("odometer", "speed", "fuel_level", "estimated_range",
                                  "battery_voltage", "tire_pressures")),
        "charging": frozenset(("battery_level", "estimated_range", "status", "charge_limit",
                               "plugged_in", "charging_rate")),
        "vehicle_location": frozenset(("coordinates", "heading")),
        "doors": frozenset(("locks_state",))}),
    ("insurer", {"diagnostics": frozenset(("odometer", "speed"))}),
]
STEPS = ("parse", "map", "permit+doc")


def timed(step: Callable[[Any], Any], chunk: Any) -> tuple[float, Any]:
    """Seconds that `step(chunk)` took, and its result."""
    started = time.perf_counter()
    result = step(chunk)
    return time.perf_counter() - started, result


def lines_by_source(messages: int) -> dict[str, list[bytes]]:
    """Simulated envelope lines (normal error rates), grouped by source."""
    grouped: dict[str, list[bytes]] = {source: [] for source in SOURCES}
    for envelope in simulate(max(8, messages // 500), messages=messages, rate=1.0, seed=11):
        grouped[envelope["source"]].append(orjson.dumps(envelope))
    return grouped


def measure(lines: list[bytes], repeat: int) -> dict[str, float]:
    """µs per message of each step over one source's lines."""
    # imported late: it pulls in Beam, which parse and map do not need
    from fleetstream.transforms.permissions import permitted_data

    size = len(lines) // repeat
    line_chunks = [lines[start:start + size] for start in range(0, size * repeat, size)]
    mapper = MAPPERS[parse_envelope_line(lines[0]).source]

    def parse(chunk: list[bytes]) -> list[RawEnvelope]:
        return [parse_envelope_line(line) for line in chunk]

    def map_all(chunk: list[RawEnvelope]) -> list[tuple[RawEnvelope, Any]]:
        return [(envelope, mapper(envelope.payload, envelope.received_at_ms))
                for envelope in chunk]

    def permit(chunk: list[tuple[RawEnvelope, Any]]) -> None:
        for envelope, result in chunk:
            if result.outcome == FAILED or result.outcome == IGNORED:
                continue
            smid = envelope.source_message_id()
            for app_id, permitted in APPLICATIONS:
                data = permitted_data(result.data, permitted)
                if data:
                    document_json(app_id, result.vin, envelope.source, message_id(smid, app_id),
                                  data)

    best = dict.fromkeys(STEPS, float("inf"))
    for chunk in line_chunks:  # each step sees each message once, in stream order
        chunk_seconds: dict[str, float] = {}
        chunk_seconds["parse"], envelopes = timed(parse, chunk)
        chunk_seconds["map"], mapped = timed(map_all, envelopes)
        chunk_seconds["permit+doc"], _ = timed(permit, mapped)
        best = {step: min(best[step], chunk_seconds[step]) for step in STEPS}
    return {step: seconds / size * 1e6 for step, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print {source: {step: µs}} as JSON")
    args = parser.parse_args()
    figures = {source: measure(lines, args.repeat)
               for source, lines in lines_by_source(args.messages).items() if lines}
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
        return
    print(f"{'source':<10}" + "".join(f"{step:>12}" for step in STEPS) + f"{'total':>12}")
    for source, steps in figures.items():
        print(f"{source:<10}" + "".join(f"{steps[step]:>12.2f}" for step in STEPS)
              + f"{sum(steps.values()):>12.2f}")


if __name__ == "__main__":
    main()
