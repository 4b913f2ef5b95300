"""Mapper micro-benchmark: Tesla records as protobuf (`tesla_telemetry`) against JSON (`tesla`).

    python benchmarks/tesla_telemetry_bench.py [--messages 20000] [--chunks 10] [--rounds 30]

Equivalent data: the simulator's tesla payloads (no trouble), each once as the JSON
text the `tesla` mapper reads and once converted to the fleet-telemetry `Payload`
protobuf the `tesla_telemetry` mapper reads (the same Datums, the same value kinds).
Timed per form: `map` (the mapper, from payload bytes to MapResult) and, to split
it, `decode` alone (orjson.loads, or protobuf's Payload.FromString). The messages
are cut into `--chunks` chunks; each round times one chunk with every step and form
in turn (interleaved, so that a busy machine slows all alike), and each figure is
the best over `--rounds` rounds, since load on the machine only ever adds time.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import orjson

from fleetstream.mappers.proto import tesla_fleet_telemetry_pb2 as pb
from fleetstream.mappers.tesla import map_payload as map_json
from fleetstream.mappers.tesla_telemetry import map_payload as map_protobuf
from fleetstream.simulator import simulate
from fleetstream.simulator.formats import TeslaTelemetry

RECEIVED_MS = 1772352931020


def payloads(messages: int) -> tuple[list[bytes], list[bytes]]:
    """(JSON payloads, the same records as protobuf) of `messages` simulated tesla messages."""
    to_protobuf = TeslaTelemetry().to_protobuf
    as_json, as_protobuf = [], []
    for envelope in simulate(max(8, messages // 500), messages=messages, rate=1.0, seed=11,
                             error_rate=0.0, duplicate_rate=0.0, sources=("tesla",)):
        text = envelope["payload"].encode()
        as_json.append(text)
        as_protobuf.append(to_protobuf(orjson.loads(text)))
    return as_json, as_protobuf


def best_us(steps: dict[str, tuple[Callable[[bytes], Any], list[bytes]]], chunks: int,
            rounds: int) -> dict[str, float]:
    """µs per item of each step (a function and its items), the best chunk over `rounds`."""
    size = min(len(items) for _, items in steps.values()) // chunks
    best = dict.fromkeys(steps, float("inf"))
    for round_ in range(rounds):
        start = round_ % chunks * size
        for name, (step, items) in steps.items():
            chunk = items[start:start + size]
            started = time.perf_counter()
            for item in chunk:
                step(item)
            best[name] = min(best[name], (time.perf_counter() - started) / len(chunk))
    return {name: seconds * 1e6 for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    as_json, as_protobuf = payloads(args.messages)
    for form, mapper, items in (("json", map_json, as_json), ("protobuf", map_protobuf,
                                                              as_protobuf)):
        outcomes = {mapper(item, RECEIVED_MS).outcome for item in items}
        assert outcomes == {"ok"}, (form, outcomes)
    timings = best_us({
        "decode json": (orjson.loads, as_json),
        "decode protobuf": (pb.Payload.FromString, as_protobuf),
        "map json": (lambda item: map_json(item, RECEIVED_MS), as_json),
        "map protobuf": (lambda item: map_protobuf(item, RECEIVED_MS, "V"), as_protobuf),
    }, args.chunks, args.rounds)
    figures = {
        "messages": len(as_json),
        "bytes_per_message": {"json": sum(map(len, as_json)) / len(as_json),
                              "protobuf": sum(map(len, as_protobuf)) / len(as_protobuf)},
        "decode_us": {form: timings[f"decode {form}"] for form in ("json", "protobuf")},
        "map_us": {form: timings[f"map {form}"] for form in ("json", "protobuf")},
    }
    if args.json:
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{figures['messages']:,} tesla messages, best chunk of {args.rounds} rounds")
    print(f"{'form':<10}{'bytes':>8}{'decode µs':>12}{'map µs':>10}{'map msg/s':>12}")
    for form in ("json", "protobuf"):
        map_us = figures["map_us"][form]
        print(f"{form:<10}{figures['bytes_per_message'][form]:>8.0f}"
              f"{figures['decode_us'][form]:>12.2f}{map_us:>10.2f}{1e6 / map_us:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
