"""`fleetstream simulate`: raw envelopes of a simulated fleet to a file or Kafka, or an OEM's
REST API serving the fleet's state."""
from __future__ import annotations

import argparse
import sys
import time

from fleetstream.schemas.errors import ConfigError


def add_simulate_parser(commands: argparse._SubParsersAction) -> None:
    """Register `simulate`."""
    simulate = commands.add_parser(
        "simulate", help="write realistic raw envelopes of a simulated fleet",
        description="Simulated raw envelopes for N vehicles across the sources (by default the "
                    "four JSON ones; --sources): moving GPS "
                    "tracks, charging and driving, the odd OEM error and malformed message.")
    simulate.add_argument("--vehicles", type=int, default=100, help="fleet size (default %(default)s)")
    limit = simulate.add_mutually_exclusive_group()
    limit.add_argument("--messages", type=int, help="stop after this many envelopes")
    limit.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                       help="simulated time span (default 600 s when --messages is not given)")
    simulate.add_argument("--rate", type=float, default=0.1,
                          help="messages per second per vehicle (default %(default)s)")
    simulate.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    simulate.add_argument("--sources", default=None, metavar="NAME,...",
                          help="the sources the fleet spreads over (default: tesla, bmw, "
                               "mercedes, smartcar; tesla_telemetry writes fleet-telemetry "
                               "protobuf records)")
    simulate.add_argument("--error-rate", type=float, default=0.01,
                          help="share of messages with trouble (default %(default)s)")
    simulate.add_argument("--duplicate-rate", type=float, default=0.001,
                          help="share of envelopes sent twice (default %(default)s)")
    simulate.add_argument("--to", metavar="FILE|kafka://HOST:PORT",
                          help="output file of JSON lines (.gz for gzip), or a Kafka broker: "
                               "records go to raw.<source> keyed by VIN, paced in real time "
                               "at vehicles x rate messages/s (required unless "
                               "--serve-oem-api)")
    oem_api = simulate.add_argument_group(
        "OEM REST API", "serve the fleet's current state as an OEM's REST API (GET "
                        "/vehicles/{vin} with ETag and 304, GET /stats) instead of writing "
                        "envelopes; --error-rate is then the share of calls answered 500")
    oem_api.add_argument("--serve-oem-api", type=int, metavar="PORT",
                         help="serve the API on 127.0.0.1:PORT until interrupted")
    oem_api.add_argument("--source", default="mercedes",
                         help="the payload format of every vehicle (default %(default)s)")
    oem_api.add_argument("--rate-limit", type=float, metavar="PER_S",
                         help="calls a second beyond which the API answers 429 with "
                              "Retry-After (default: no limit)")
    oem_api.add_argument("--retry-after", type=int, default=2, metavar="SECONDS",
                         help="the 429s' Retry-After (default %(default)s)")
    oem_api.add_argument("--update-every", type=float, default=60.0, metavar="SECONDS",
                         help="how often a vehicle's state changes (default %(default)s)")
    oem_api.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                         help="how long each answer takes (default %(default)s)")
    simulate.add_argument("--activations", metavar="FILE",
                          help="also write activation events (JSON lines) for --applications")
    simulate.add_argument("--applications", default="fleet-a",
                          help="comma-separated application ids for --activations "
                               "(default %(default)s)")
    simulate.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import orjson

    from fleetstream.simulator import activations, simulate_keyed, write_envelopes
    if args.serve_oem_api is not None:
        from fleetstream.simulator.oem_api import serve_oem_api
        try:
            serve_oem_api(args.serve_oem_api, args.vehicles, source=args.source,
                          seed=args.seed, rate_limit=args.rate_limit,
                          retry_after_s=args.retry_after, error_rate=args.error_rate,
                          update_every_s=args.update_every, latency_s=args.latency)
        except ValueError as error:
            raise ConfigError(f"simulate --serve-oem-api: {error}") from None
        return 0
    if not args.to:
        raise ConfigError("simulate: give --to FILE|kafka://HOST:PORT, or --serve-oem-api PORT")
    duration = args.duration
    if args.messages is None and duration is None:
        duration = 600.0
    to_kafka = args.to.startswith("kafka://")
    sources = {} if args.sources is None else {
        "sources": tuple(name.strip() for name in args.sources.split(",") if name.strip())}
    try:
        envelopes = simulate_keyed(
            args.vehicles, messages=args.messages, duration_s=duration, rate=args.rate,
            seed=args.seed, error_rate=args.error_rate, duplicate_rate=args.duplicate_rate,
            **sources, **({"start_ms": int(time.time() * 1000)} if to_kafka else {}))
    except ValueError as error:
        raise ConfigError(f"simulate: {error}") from None
    if to_kafka:
        from fleetstream.io.kafka.producer import produce_envelopes
        from fleetstream.settings.topics import DEFAULT_RAW_TOPICS
        count = produce_envelopes(args.to.removeprefix("kafka://"), envelopes,
                                  messages_per_s=args.vehicles * args.rate,
                                  topic_of_source=DEFAULT_RAW_TOPICS)
    else:
        count = write_envelopes(args.to, (envelope for _, envelope in envelopes))
    print(f"wrote {count} envelopes to {args.to}", file=sys.stderr)
    if args.activations:
        app_ids = [a.strip() for a in args.applications.split(",") if a.strip()]
        with open(args.activations, "wb") as out:
            for event in activations(args.vehicles, app_ids, seed=args.seed, **sources):
                out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        print(f"wrote activations for {len(app_ids)} application(s) to {args.activations}",
              file=sys.stderr)
    return 0
