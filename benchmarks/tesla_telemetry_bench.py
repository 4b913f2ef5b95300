"""Mapper micro-benchmark: Tesla records as protobuf (`tesla_telemetry`) against JSON (`tesla`).

    python benchmarks/tesla_telemetry_bench.py [--messages 40000] [--repeat 5] [--json]

Equivalent data: the simulator's tesla payloads (no trouble), each once as the JSON
text the `tesla` mapper reads and once converted to the fleet-telemetry `Payload`
protobuf the `tesla_telemetry` mapper reads (the same Datums, the same value kinds).
Timed per form: `map` (the mapper, from payload bytes to MapResult) and, to split
it, `decode` alone (orjson.loads, or protobuf's Payload.FromString). The messages
are cut into `--repeat` consecutive chunks, each timed once per step; each figure is
the best chunk, since load on the machine only ever adds time.
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


def best_us(step: Callable[[list[bytes]], Any], items: list[bytes], repeat: int) -> float:
    """µs per item of `step` over the best of `repeat` consecutive chunks."""
    size = len(items) // repeat
    best = float("inf")
    for start in range(0, size * repeat, size):
        chunk = items[start:start + size]
        started = time.perf_counter()
        step(chunk)
        best = min(best, (time.perf_counter() - started) / len(chunk))
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    as_json, as_protobuf = payloads(args.messages)
    for form, mapper, items in (("json", map_json, as_json), ("protobuf", map_protobuf,
                                                              as_protobuf)):
        outcomes = {mapper(item, RECEIVED_MS).outcome for item in items}
        assert outcomes == {"ok"}, (form, outcomes)
    figures = {
        "messages": len(as_json),
        "bytes_per_message": {"json": sum(map(len, as_json)) / len(as_json),
                              "protobuf": sum(map(len, as_protobuf)) / len(as_protobuf)},
        "decode_us": {
            "json": best_us(lambda chunk: [orjson.loads(item) for item in chunk], as_json,
                            args.repeat),
            "protobuf": best_us(lambda chunk: [pb.Payload.FromString(item) for item in chunk],
                                as_protobuf, args.repeat)},
        "map_us": {
            "json": best_us(lambda chunk: [map_json(item, RECEIVED_MS) for item in chunk],
                            as_json, args.repeat),
            "protobuf": best_us(lambda chunk: [map_protobuf(item, RECEIVED_MS, "V")
                                               for item in chunk], as_protobuf, args.repeat)},
    }
    if args.json:
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{figures['messages']:,} tesla messages, best of {args.repeat} chunks")
    print(f"{'form':<10}{'bytes':>8}{'decode µs':>12}{'map µs':>10}{'map msg/s':>12}")
    for form in ("json", "protobuf"):
        map_us = figures["map_us"][form]
        print(f"{form:<10}{figures['bytes_per_message'][form]:>8.0f}"
              f"{figures['decode_us'][form]:>12.2f}{map_us:>10.2f}{1e6 / map_us:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
