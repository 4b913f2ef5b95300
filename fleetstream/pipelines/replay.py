"""The batch replay job (DATA-CONTRACTS §7): archived raw envelopes through the whole pipeline.

    fleetstream replay --input 'archive/*.jsonl.gz' --config config.yaml --output out/
    fleetstream replay --archive s3://bucket/fleet --from 2026-03-01T08:00Z --until 2026-03-01T09:00Z ...

With `--output`, each application's documents are written as JSON lines under
`<output>/<application_id>/` and dead letters under `<output>/dead_letters/`,
in place of the configured sinks; without it, documents go to the configured
sinks and dead letters to `--dead-letters`. Message ids are a pure function
of the input, so two replays of the same input deliver the same ids.

`--archive` reads the raw archive (`archive_layout`) instead of `--input`
files: only the hour folders of the selected sources and receive times are
listed and opened. The files are matched before the job starts; a replay
that finds none says so and ends with an empty summary.

With a `state:` section in the configuration, every mapped message's entries also go to
the latest-state store (`WriteLatestState`), so replaying an archive rebuilds the state
(values newer than the replayed ones stay).

`selection` (an `EnvelopeFilter`: `--source`, `--vin`, `--from`, `--until`)
replays only some envelopes; the others are counted as skipped. `only`
(`--application`) delivers to those configured applications alone.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from fleetstream.io.archive.layout import archive_patterns
from fleetstream.io.redis.state_store import check_state_store
from fleetstream.io.redis.write_state import WriteLatestState
from fleetstream.io.files.envelope_files import (UNREADABLE, EnvelopeFile, ReadEnvelopes,
                                                 match_envelope_files)
from fleetstream.io.files.line_files import WriteLineFiles
from fleetstream.io.sinks.object.file import FileSink
from fleetstream.io.sinks.registry import application_sink
from fleetstream.mappers import MAPPERS
from fleetstream.pipelines.accounting import Accounting
from fleetstream.pipelines.fleet import DeliverFleet
from fleetstream.runtime.ipython_probe import answer_ipython_probe_without_import
from fleetstream.runtime.job_streams import wait_until_done
from fleetstream.runtime.sdk_worker import fewer_collections, install_fast_state_cache_sizing
from fleetstream.schemas.config import Application, Config
from fleetstream.schemas.dead_letter import to_json_line
from fleetstream.schemas.delivery import Batching
from fleetstream.schemas.errors import ConfigError
from fleetstream.settings.stream import OrderSettings
from fleetstream.transforms.filter_envelopes import EnvelopeFilter, FilterEnvelopes
from fleetstream.transforms.permit_by_activation import (KnownActivationTable,
                                                         PermitByActivation)

#: batching for `--output` files: a file per application and 20,000 documents (or 16 MB),
#: and one for the rest of each bundle of input. Bounded, so a batch job does not keep a
#: whole bundle's documents alive (with 200,000 the collector walked them hundreds of times)
OUTPUT_BATCHING = Batching(max_records=20_000, max_bytes=16 << 20, max_delay_s=0.5)


def output_applications(config: Config, output: str) -> tuple[Application, ...]:
    """The configured applications, each writing JSON lines under `<output>/<id>/`."""
    return tuple(dataclasses.replace(
        app, sink_options={"type": FileSink.TYPE, "path": os.path.join(output, app.id)},
        batching=OUTPUT_BATCHING) for app in config.applications)


def select_applications(applications: Sequence[Application],
                        only: Sequence[str]) -> tuple[Application, ...]:
    """The applications named in `only` (all when empty); ConfigError for an unknown id."""
    known = {app.id for app in applications}
    unknown = sorted(set(only) - known)
    if unknown:
        raise ConfigError(f"--application: unknown application(s) {', '.join(unknown)}; "
                          f"configured: {', '.join(sorted(known))}")
    return tuple(app for app in applications if not only or app.id in only)


def check_sinks(applications: Sequence[Application]) -> None:
    """Start-up checks of every sink (raises ConfigError naming the application)."""
    for app in applications:
        application_sink(app).check()


def replay_files(input_pattern: str | None, archive: str | None,
                 selection: EnvelopeFilter) -> list[EnvelopeFile]:
    """The files a replay reads: those matching `input_pattern`, or the archive's folders
    that `selection` needs (its sources, or every mapper's; its receive-time range)."""
    if (input_pattern is None) == (archive is None):
        raise ValueError("give either --input (files or a glob) or --archive (an archive root)")
    if archive is None:
        files = match_envelope_files([input_pattern])
        if not files:
            raise ValueError(f"--input: no file matches {input_pattern!r}")
        return files
    patterns = archive_patterns(archive, selection.sources or MAPPERS, selection.from_ms,
                                selection.until_ms, now_ms=int(time.time() * 1000))
    return match_envelope_files(patterns, only_archive_files=True)


def run_replay(input_pattern: str | None, config: Config, *, archive: str | None = None,
               output: str | None = None, dead_letters: str | None = None,
               order: OrderSettings = OrderSettings(),
               selection: EnvelopeFilter = EnvelopeFilter(), only: Sequence[str] = (),
               beam_args: Sequence[str] = ()) -> Accounting:
    """Run the replay to completion and return its accounting (empty when no file matches).

    Applications with geofences receive their crossings beside their documents; with a
    `state:` section the crossings are also appended to their Redis streams
    (docs/geofences.md) and the latest state is written (docs/state.md).
    """
    applications = select_applications(
        output_applications(config, output) if output else config.applications, only)
    check_sinks(applications)
    if config.state is not None:
        check_state_store(config.state.redis)
    dead_letter_dir = os.path.join(output, "dead_letters") if output else (
        dead_letters or "dead_letters")
    options = PipelineOptions(list(beam_args))
    FileSystems.set_options(options)
    files = replay_files(input_pattern, archive, selection)
    if not files:
        print(f"replay: the archive {archive} holds no files for the selected sources and "
              f"times; nothing to replay", file=sys.stderr)
        return Accounting()
    print(f"replay: {len(files):,} files, {sum(f.size for f in files) / 1e6:,.1f} MB to read",
          file=sys.stderr)
    answer_ipython_probe_without_import()
    install_fast_state_cache_sizing()   # the job's one worker runs in this process
    with fewer_collections():   # as in the streaming job's workers
        pipeline = replay_pipeline(options, files, config, applications, dead_letter_dir,
                                   order, selection)
        result = pipeline.run()
        wait_until_done(result)
    return Accounting.from_result(result)


def replay_pipeline(options: PipelineOptions, files: Sequence[EnvelopeFile], config: Config,
                    applications: Sequence[Application], dead_letter_dir: str,
                    order: OrderSettings, selection: EnvelopeFilter) -> beam.Pipeline:
    """The replay job: `files` through the whole pipeline to `applications`' sinks.

    Envelopes go in lists (`batches=True`) from the reader to the ordering's shuffle, so
    Beam's per-element cost is paid per list there and per vehicle after it.
    """
    pipeline = beam.Pipeline(options=options)
    read = pipeline | "ReadEnvelopes" >> ReadEnvelopes(files, batches=True)
    table = pipeline | "ActivationTable" >> KnownActivationTable(config.activations)
    envelopes = read.envelopes
    if not selection.keeps_everything():
        envelopes = envelopes | "FilterEnvelopes" >> FilterEnvelopes(selection, batches=True)
    fleet = envelopes | "DeliverFleet" >> DeliverFleet(
        applications, PermitByActivation(applications, table), order, batches=True,
        redis_url=config.redis_url, mapped_out=config.state is not None)
    dead = fleet.dead_letters
    if config.state is not None:
        _ = fleet.mapped | "WriteLatestState" >> WriteLatestState(config.state.redis,
                                                                 batches=True)
    ((dead, read[UNREADABLE]) | "DeadLetters" >> beam.Flatten()
     | "SerialiseDeadLetters" >> beam.Map(to_json_line)
     | "WriteDeadLetters" >> WriteLineFiles(os.path.join(dead_letter_dir, "dead-letters"),
                                            ".jsonl"))
    return pipeline
