"""The `fleetstream` command line: run, replay, dead-letters, simulate, stream, api, status,
dashboard, exporter, monitoring, dev."""
from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from typing import TYPE_CHECKING, Sequence

# Google client libraries that Beam's GCP extra imports warn about future Python versions.
warnings.filterwarnings("ignore", category=FutureWarning, module="google")

from fleetstream.pipelines.monitoring_commands import add_monitoring_parsers
from fleetstream.pipelines.operations_commands import add_operations_parsers
from fleetstream.pipelines.simulate_command import add_simulate_parser
from fleetstream.runtime.library_noise import quiet_library_noise
from fleetstream.schemas.errors import ConfigError

# settings.stream and transforms import Beam (4-5 s): imported where a pipeline command needs
# them, so that `fleetstream status` and `dashboard` start at once
if TYPE_CHECKING:
    from fleetstream.pipelines.dead_letters import DeadLetterFilter
    from fleetstream.transforms.filter_envelopes import EnvelopeFilter

DESCRIPTION = """FleetStream moves vehicle data from car makers to the applications that use it:
ingest raw OEM messages, map them to one common model, deliver each application
only what its activated vehicles permit, in per-vehicle order."""


def _order_arguments(parser: argparse.ArgumentParser) -> None:
    from fleetstream.settings.stream import OrderSettings
    parser.add_argument("--reorder-window", type=float, default=OrderSettings.reorder_window_s,
                        metavar="SECONDS",
                        help="how long a message waits for older ones of its vehicle in "
                             "streaming jobs (default %(default)s)")
    parser.add_argument("--dedupe-horizon", type=float, default=OrderSettings.dedupe_horizon_s,
                        metavar="SECONDS",
                        help="an exact repeat of a source message received within this many "
                             "seconds is dropped (default %(default)s)")


def _receipt_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--source, --from and --until, in a "selection" group that the caller may extend."""
    group = parser.add_argument_group("selection")
    group.add_argument("--source", action="append", default=[], metavar="NAME",
                       help="only messages from this source (repeatable)")
    group.add_argument("--from", dest="from_time", metavar="TIME",
                       help="only messages received at or after TIME (ISO-8601 or epoch ms)")
    group.add_argument("--until", dest="until_time", metavar="TIME",
                       help="only messages received before TIME (ISO-8601 or epoch ms)")
    return group


def envelope_filter(args: argparse.Namespace,
                    vins: frozenset[str] = frozenset()) -> EnvelopeFilter:
    """The EnvelopeFilter of --source, --from and --until (and `vins`)."""
    from fleetstream.transforms.filter_envelopes import EnvelopeFilter, parse_time
    return EnvelopeFilter(
        sources=frozenset(args.source), vins=vins,
        from_ms=parse_time(args.from_time, "--from") if args.from_time else None,
        until_ms=parse_time(args.until_time, "--until") if args.until_time else None)


def read_vins(args: argparse.Namespace) -> frozenset[str]:
    """The VINs of --vin and of --vin-file (one per line, blank lines ignored)."""
    vins = set(args.vin)
    if args.vin_file:
        try:
            with open(args.vin_file, encoding="utf-8") as lines:
                vins.update(line.strip() for line in lines if line.strip())
        except OSError as error:
            raise ValueError(f"--vin-file: {error}") from None
    return frozenset(vins)


def _beam_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Beam and S3")
    group.add_argument("--runner", default="DirectRunner",
                       help="Beam runner (default %(default)s)")
    group.add_argument("--direct-num-workers", type=int, default=1, metavar="N",
                       help="DirectRunner worker processes (default 1: the job in this "
                            "process; 0: one per core. On 2 cores the replay benchmark ran "
                            "1.5-2x slower with 2 worker processes than with 1, "
                            "docs/benchmarks.md)")
    group.add_argument("--s3-endpoint-url", help="S3 endpoint, e.g. http://127.0.0.1:5000 "
                                                 "for a local S3 server")
    group.add_argument("--s3-region", help="S3 region name")
    group.add_argument("--s3-access-key-id", help="S3 access key id")
    group.add_argument("--s3-secret-access-key", help="S3 secret access key")
    group.add_argument("--beam-option", action="append", default=[], metavar="--NAME=VALUE",
                       help="any other Beam pipeline option (repeatable)")


def beam_args(args: argparse.Namespace) -> list[str]:
    """Beam pipeline options from the parsed command line."""
    options = [f"--runner={args.runner}"]
    if args.runner == "DirectRunner" and args.direct_num_workers != 1:
        options += [f"--direct_num_workers={args.direct_num_workers}",
                    "--direct_running_mode=multi_processing"]
    for flag in ("s3_endpoint_url", "s3_region", "s3_access_key_id", "s3_secret_access_key"):
        value = getattr(args, flag)
        if value:
            options.append(f"--{flag.replace('_region', '_region_name')}={value}")
    return options + list(args.beam_option)


#: `fleetstream dev`'s one-line help, shown before its module is imported
DEV_HELP = "start, stop and inspect the local servers"


def build_parser(with_dev: bool = False) -> argparse.ArgumentParser:
    """The command line; the `dev` command's own options only `with_dev` (they import
    `fleetstream.dev`, which no other command needs)."""
    parser = argparse.ArgumentParser(prog="fleetstream", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's progress too")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="the embedded demo: simulate a fleet and run the whole pipeline locally",
        description="Simulate a small fleet, run the pipeline on the DirectRunner with a demo "
                    "configuration, write deliveries under --out and print a summary.")
    run.add_argument("--out", default="fleetstream-out", help="output folder (default %(default)s)")
    run.add_argument("--vehicles", type=int, default=40, help="fleet size (default %(default)s)")
    run.add_argument("--duration", type=float, default=600.0, metavar="SECONDS",
                     help="simulated time (default %(default)s)")
    run.add_argument("--rate", type=float, default=0.2,
                     help="messages per second per vehicle (default %(default)s)")
    run.add_argument("--seed", type=int, default=1, help="simulation seed (default %(default)s)")
    _beam_arguments(run)
    run.set_defaults(handler=_run)

    replay = commands.add_parser(
        "replay", help="run archived raw envelopes through the pipeline as a batch job",
        description="Replay raw envelope files (JSON lines, .gz allowed, or the raw archive's "
                    "Avro files; local or s3://) through map, order, permit and deliver; "
                    "print progress and the accounting summary.")
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--input", help="file or glob of raw envelopes (** crosses folders)")
    where.add_argument("--archive", metavar="ROOT",
                       help="root of a raw archive (ROOT/raw/<source>/yyyy/mm/dd/HH/): only "
                            "the folders of the selected sources and --from/--until hours are "
                            "listed and read")
    replay.add_argument("--config", required=True, help="configuration YAML")
    replay.add_argument("--output", help="write each application's documents under "
                                         "OUTPUT/<application_id>/ and dead letters under "
                                         "OUTPUT/dead_letters/ instead of the configured sinks")
    replay.add_argument("--dead-letters", default="dead_letters",
                        help="dead-letter folder when --output is not given (default %(default)s)")
    selection = _receipt_arguments(replay)
    selection.add_argument("--vin", action="append", default=[],
                           help="only messages of this vehicle (repeatable); the VIN is read "
                                "by the source's mapper, so unreadable messages are skipped")
    selection.add_argument("--vin-file", metavar="FILE", help="only the VINs in FILE, one a line")
    selection.add_argument("--application", action="append", default=[], metavar="ID",
                           help="deliver only to this configured application (repeatable)")
    _order_arguments(replay)
    _beam_arguments(replay)
    replay.set_defaults(handler=_replay)

    archive = commands.add_parser(
        "archive", help="put raw envelope files into the raw archive (batch)",
        description="Write raw envelope files (JSON lines, .gz allowed; local or s3://) into "
                    "the raw archive ROOT/raw/<source>/yyyy/mm/dd/HH/ as windowed files with "
                    "deterministic names; running it again rewrites the same files.")
    archive.add_argument("--input", required=True, help="file or glob of raw envelopes")
    archive.add_argument("--to", required=True, metavar="ROOT",
                         help="archive root: a folder or s3://bucket/prefix")
    archive.add_argument("--format", default="jsonl.gz", choices=("jsonl.gz", "avro"),
                         help="file format (default %(default)s)")
    archive.add_argument("--window", type=int, default=300, metavar="SECONDS",
                         help="file window; must divide an hour (default %(default)s)")
    archive.add_argument("--shards", type=int, default=1,
                         help="files per source, hour and window (default %(default)s)")
    _beam_arguments(archive)
    archive.set_defaults(handler=_archive)

    _add_dead_letters_parser(commands)

    add_simulate_parser(commands)

    ingest = commands.add_parser(
        "ingest", help="run the ingest gateway: HTTP push, bridges and poller into Kafka",
        description="Take raw OEM data in (signed HTTP pushes, MQTT/AMQP/SQS/Kinesis/Pub/Sub/"
                    "Kafka bridges, a REST poller) and write it untouched to each source's raw "
                    "Kafka topic, acknowledging senders only after Kafka did "
                    "(DATA-CONTRACTS §8). Secrets come from environment variables named in "
                    "the settings.")
    ingest.add_argument("--config", default="ingest.yaml", metavar="FILE",
                        help="ingest settings (default %(default)s); see examples/ingest.yaml")
    ingest.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                        help="processes serving HTTP push on the one port (SO_REUSEPORT; "
                             "default %(default)s); bridges and the poller run only in the "
                             "first; /metrics counts per process")
    ingest.set_defaults(handler=_ingest)
    api = commands.add_parser(
        "api", help="serve the latest-state REST API (Redis, activations from Kafka)",
        description="Serve GET /v1/vehicles... (DATA-CONTRACTS §10) over the latest state in "
                    "the configuration's state.redis, to each application with the API keys "
                    "in its api_keys_env variable, following the activations topic live.")
    api.add_argument("--config", required=True, metavar="FILE", help="configuration YAML")
    api.add_argument("--listen", default="127.0.0.1:8091", metavar="HOST:PORT",
                     help="address to serve on (default %(default)s)")
    api.add_argument("--kafka", default="127.0.0.1:9092", metavar="HOST:PORT",
                     help="Kafka bootstrap servers (default %(default)s)")
    api.add_argument("--activations-topic", default="activations", metavar="TOPIC",
                     help="the compacted activations topic (default %(default)s)")
    api.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                     help="processes serving the API on the one port (SO_REUSEPORT; default "
                          "%(default)s), each following activations on its own")
    api.set_defaults(handler=_api)
    stream = commands.add_parser(
        "stream", help="submit the streaming job (Kafka in, Flink, sinks out)",
        description="Submit the streaming job to Beam's Flink job server with the settings in "
                    "--config (flink-runner.yaml); it runs until cancelled.")
    stream.add_argument("--config", default="flink-runner.yaml",
                        help="stream settings (default %(default)s)")
    stream.add_argument("--start", metavar="earliest|latest|TIME",
                        help="move the consumer group's raw-topic offsets here before "
                             "submitting, to reprocess (ignored with --savepoint; TIME is "
                             "ISO-8601 or epoch ms: each partition's first record at or "
                             "after it). Without it the job resumes from the group's "
                             "committed offsets, or kafka.start where it has none")
    stream.add_argument("--consumer-group", metavar="NAME",
                        help="Kafka consumer group of the raw reads (overrides "
                             "kafka.consumer_group), e.g. a fresh one to reprocess with --start")
    stream.add_argument("--savepoint", metavar="PATH",
                        help="restore the job from this savepoint or retained checkpoint")
    stream.add_argument("--wait", action="store_true",
                        help="wait until the job ends instead of returning once it runs; "
                             "exit 1 unless it ends done (e.g. cancelled, failed)")
    stream.add_argument("--beam-option", action="append", default=[], metavar="--NAME=VALUE",
                        help="any other Beam or Flink pipeline option (repeatable)")
    stream.set_defaults(handler=_stream)
    add_monitoring_parsers(commands)

    add_operations_parsers(commands)

    if with_dev:
        from fleetstream.dev.cli import add_dev_parser
        add_dev_parser(commands, DEV_HELP)
    else:
        commands.add_parser("dev", help=DEV_HELP)
    return parser


#: the commands that need no Beam: main() builds a parser of them alone (see _operations_parser)
OPERATIONS_COMMANDS = ("status", "dashboard")


def _operations_parser() -> argparse.ArgumentParser:
    """The command line of `status` and `dashboard` alone, for main() to parse them without
    importing the pipeline commands' Beam."""
    parser = argparse.ArgumentParser(prog="fleetstream", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's progress too")
    add_operations_parsers(parser.add_subparsers(dest="command", required=True,
                                                  metavar="COMMAND"))
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command in `argv` (the first argument that is not an option)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _add_dead_letters_parser(commands: argparse._SubParsersAction) -> None:
    dead_letters = commands.add_parser(
        "dead-letters", help="summarise dead letters, or send map-stage ones through again",
        description="List dead letters by source, stage, outcome and reason, or resend "
                    "map-stage dead letters through the pipeline after a mapper fix.")
    actions = dead_letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="count dead letters per source, stage and outcome; the common reasons",
        description="Print how many dead letters match, per source, stage and outcome, and "
                    "their most common reasons.")
    resend = actions.add_parser(
        "resend", help="replay map-stage dead letters' raw envelopes through the pipeline",
        description="Turn the selected map-stage dead letters back into raw envelopes and "
                    "replay them: those that now map are delivered under the ids a first "
                    "delivery would have had, the rest become dead letters again under "
                    "OUTPUT/dead_letters/ with their new reasons. Ingest-stage and "
                    "delivery-stage dead letters (stage deliver, which carry documents) are "
                    "not resent by this command.")
    for parser in (listing, resend):
        parser.add_argument("--input", required=True,
                            help="file or glob of dead letters (JSON lines, local or s3://), "
                                 "or a topic: kafka://HOST:PORT/TOPIC")
        _receipt_arguments(parser).add_argument(
            "--reason", default="", metavar="TEXT",
            help="only dead letters with TEXT in an error reason (any case)")
    resend.add_argument("--config", required=True, help="configuration YAML")
    resend.add_argument("--output", required=True,
                        help="write documents under OUTPUT/<application_id>/ and dead letters "
                             "under OUTPUT/dead_letters/")
    _order_arguments(resend)
    _beam_arguments(resend)
    listing.set_defaults(handler=_dead_letters_list)
    resend.set_defaults(handler=_dead_letters_resend)


def _run(args: argparse.Namespace) -> int:
    from fleetstream.pipelines.demo import run_demo
    started = time.monotonic()
    print(f"fleetstream run: simulating {args.vehicles} vehicles for {args.duration:.0f} s "
          f"and running the pipeline on the {args.runner} ...", file=sys.stderr)
    config, accounting = run_demo(args.out, args.vehicles, args.duration, args.rate, args.seed,
                                  beam_args(args))
    print(accounting.render(a.id for a in config.applications))
    print(f"\ndeliveries and dead letters are under {args.out}/ "
          f"({time.monotonic() - started:.1f} s)")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from fleetstream.pipelines.replay import run_replay
    from fleetstream.settings.config import load_config
    from fleetstream.settings.stream import OrderSettings
    config = load_config(args.config)
    started = time.monotonic()
    accounting = run_replay(
        args.input, config, archive=args.archive, output=args.output,
        dead_letters=args.dead_letters,
        order=OrderSettings(args.reorder_window, args.dedupe_horizon),
        selection=envelope_filter(args, read_vins(args)), only=args.application,
        beam_args=beam_args(args))
    print(accounting.render(args.application or [a.id for a in config.applications]))
    elapsed = time.monotonic() - started
    read = accounting.total("read")
    print(f"\n{read} messages in {elapsed:.1f} s ({read / max(elapsed, 1e-9):,.0f}/s)")
    return 0


def _archive(args: argparse.Namespace) -> int:
    from fleetstream.io.archive.raw_archive import ArchiveSettings
    from fleetstream.pipelines.archive import run_archive
    settings = ArchiveSettings.from_options("archive", {
        "path": args.to, "format": args.format, "window_s": args.window, "shards": args.shards})
    started = time.monotonic()
    summary = run_archive(args.input, settings, beam_args(args))
    print(f"archived {summary.envelopes} envelopes in {summary.files} files under "
          f"{args.to}/raw/ ({time.monotonic() - started:.1f} s); {summary.unreadable} "
          f"unreadable lines or broken files were not archived")
    return 0


def _dead_letter_filter(args: argparse.Namespace) -> DeadLetterFilter:
    from fleetstream.pipelines.dead_letters import DeadLetterFilter
    return DeadLetterFilter(envelope_filter(args), args.reason)


def _dead_letters_list(args: argparse.Namespace) -> int:
    from fleetstream.pipelines.dead_letters import DeadLetterSummary, select_dead_letters
    print(DeadLetterSummary.of(select_dead_letters(args.input, _dead_letter_filter(args)))
          .render())
    return 0


def _dead_letters_resend(args: argparse.Namespace) -> int:
    from fleetstream.pipelines.dead_letters import resend_dead_letters
    from fleetstream.settings.config import load_config
    from fleetstream.settings.stream import OrderSettings
    config = load_config(args.config)
    resent = resend_dead_letters(
        args.input, config, args.output, selection=_dead_letter_filter(args),
        order=OrderSettings(args.reorder_window, args.dedupe_horizon), beam_args=beam_args(args))
    print(f"resent {resent.resent} map-stage dead letters; {resent.not_resendable} selected "
          f"dead letters are not map-stage and were not resent")
    if resent.resent:
        print(resent.accounting.render(a.id for a in config.applications))
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _ingest(args: argparse.Namespace) -> int:
    from fleetstream.ingest.service import run_ingest
    from fleetstream.settings.ingest import load_ingest_settings
    settings = load_ingest_settings(args.config)
    print(f"fleetstream ingest: {len(settings.sources)} source(s), Kafka at "
          f"{settings.bootstrap_servers}, HTTP on {settings.http.host}:{settings.http.port}"
          f" ({args.workers} process{'es' if args.workers > 1 else ''})", file=sys.stderr)
    run_ingest(settings, workers=args.workers)
    return 0


def _api(args: argparse.Namespace) -> int:
    from fleetstream.api.server import run_api
    from fleetstream.settings.config import load_config
    config = load_config(args.config)
    print(f"fleetstream api: serving {len(config.applications)} application(s) on "
          f"http://{args.listen}", file=sys.stderr)
    run_api(config, args.listen, args.kafka, args.activations_topic, args.workers)
    return 0


def _stream(args: argparse.Namespace) -> int:
    import dataclasses

    from apache_beam.runners.runner import PipelineState

    from fleetstream.pipelines.stream import submit_stream
    from fleetstream.runtime.job_streams import poll_until_done
    from fleetstream.settings.stream import load_stream_settings, parse_start
    settings = load_stream_settings(args.config)
    overrides = {}
    if args.start:
        overrides["start"] = parse_start(args.start, "--start")
    if args.consumer_group:
        overrides["consumer_group"] = args.consumer_group
    settings = dataclasses.replace(settings, kafka=dataclasses.replace(settings.kafka,
                                                                       **overrides))
    if args.savepoint:
        settings = settings.restored_from(args.savepoint)
    result = submit_stream(settings, args.beam_option, reset_offsets=bool(args.start))
    print(f"fleetstream stream: job submitted to {settings.flink.job_endpoint} "
          f"(state {result.state})", file=sys.stderr)
    if args.wait:
        state = poll_until_done(result)
        print(f"fleetstream stream: the job ended in state {state}", file=sys.stderr)
        return 0 if state == PipelineState.DONE else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = (_operations_parser() if _command_of(argv) in OPERATIONS_COMMANDS
              else build_parser(with_dev=_command_of(argv) == "dev"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        quiet_library_noise()
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"fleetstream: configuration error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:   # `fleetstream dev` reports its own ServiceErrors
        print(f"fleetstream: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
