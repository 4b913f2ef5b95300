"""Mapping micro-benchmark: µs per simulator message and source for each step of the plain loop.

    python benchmarks/mapping_bench.py [--messages 20000] [--repeat 5] [--json]

Steps, as in `replay_bench.py`'s plain loop: `parse` (parse_envelope_line),
`map` (the source's mapper), `permit+doc` (source_message_id, then per approved
application permitted_data, message_id and document_json; every application is
approved for every vehicle). Each figure is the best of `--repeat` runs, since
load on the machine only ever adds time; compare versions in the same run.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Iterable

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


def best_us(step: Callable[[], Any], items: int, repeat: int) -> float:
    """The best of `repeat` runs of `step`, in µs per item."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best / items * 1e6


def lines_by_source(messages: int) -> dict[str, list[bytes]]:
    """Simulated envelope lines (normal error rates), grouped by source."""
    grouped: dict[str, list[bytes]] = {source: [] for source in SOURCES}
    for envelope in simulate(max(8, messages // 500), messages=messages, rate=1.0, seed=11):
        grouped[envelope["source"]].append(orjson.dumps(envelope))
    return grouped


def measure(lines: list[bytes], repeat: int) -> dict[str, float]:
    """µs per message of each step over one source's lines."""
    envelopes = [parse_envelope_line(line) for line in lines]
    mapper = MAPPERS[envelopes[0].source]
    results = [(envelope, mapper(envelope.payload, envelope.received_at_ms))
               for envelope in envelopes]
    results = [(envelope, result) for envelope, result in results
               if result.outcome != FAILED and result.outcome != IGNORED]

    def parse() -> None:
        for line in lines:
            parse_envelope_line(line)

    def map_all() -> None:
        for envelope in envelopes:
            mapper(envelope.payload, envelope.received_at_ms)

    def permit(mapped: Iterable[tuple[RawEnvelope, Any]] = results) -> None:
        # imported late: it pulls in Beam, which parse and map do not need
        from fleetstream.transforms.permit_by_activation import permitted_data
        for envelope, result in mapped:
            smid = envelope.source_message_id()
            for app_id, permitted in APPLICATIONS:
                data = permitted_data(result.data, permitted)
                if data:
                    document_json(app_id, result.vin, envelope.source, message_id(smid, app_id),
                                  data)

    permit()  # the import
    return {"parse": best_us(parse, len(lines), repeat),
            "map": best_us(map_all, len(lines), repeat),
            "permit+doc": best_us(permit, len(lines), repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
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
