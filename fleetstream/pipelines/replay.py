"""The batch replay job (DATA-CONTRACTS §7): archived raw envelopes through the whole pipeline.

    fleetstream replay --input 'archive/*.jsonl.gz' --config config.yaml --output out/

With `--output`, each application's documents are written as JSON lines under
`<output>/<application_id>/` and dead letters under `<output>/dead_letters/`,
in place of the configured sinks; without it, documents go to the configured
sinks and dead letters to `--dead-letters`. Message ids are a pure function
of the input, so two replays of the same input deliver the same ids.

`selection` (an `EnvelopeFilter`: `--source`, `--vin`, `--from`, `--until`)
replays only some envelopes; the others are counted as skipped. `only`
(`--application`) delivers to those configured applications alone.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from fleetstream.io.base import Batching, ConfigError
from fleetstream.io.envelope_files import UNREADABLE, ReadEnvelopes
from fleetstream.io.file_sink import FileSink
from fleetstream.pipelines.accounting import Accounting
from fleetstream.pipelines.fleet import DeliverFleet, OrderSettings
from fleetstream.pipelines.progress import ReportProgress
from fleetstream.schemas.config import Application, Config
from fleetstream.schemas.dead_letter import to_json_line
from fleetstream.transforms.filter_envelopes import EnvelopeFilter, FilterEnvelopes
from fleetstream.transforms.permit_by_activation import ActivationTable, PermitByActivation

#: batching for `--output` files: one file per application and bundle of input
OUTPUT_BATCHING = Batching(max_records=200_000, max_bytes=256 << 20, max_delay_s=0.5)


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
        app.sink().check()


def run_replay(input_pattern: str, config: Config, *, output: str | None = None,
               dead_letters: str | None = None, order: OrderSettings = OrderSettings(),
               selection: EnvelopeFilter = EnvelopeFilter(), only: Sequence[str] = (),
               beam_args: Sequence[str] = ()) -> Accounting:
    """Run the replay to completion and return its accounting."""
    applications = select_applications(
        output_applications(config, output) if output else config.applications, only)
    check_sinks(applications)
    dead_letter_dir = os.path.join(output, "dead_letters") if output else (
        dead_letters or "dead_letters")
    options = PipelineOptions(list(beam_args))
    pipeline = beam.Pipeline(options=options)
    read = pipeline | "ReadEnvelopes" >> ReadEnvelopes(input_pattern)
    table = (pipeline | "Activations" >> beam.Create(config.activations)
             | "ActivationTable" >> ActivationTable())
    envelopes = read.envelopes
    if not selection.keeps_everything():
        envelopes = envelopes | "FilterEnvelopes" >> FilterEnvelopes(selection)
    dead = (envelopes
            | "ReportProgress" >> ReportProgress("replay: envelopes read")
            | "DeliverFleet" >> DeliverFleet(
                applications, PermitByActivation(applications, table), order)).dead_letters
    ((dead, read[UNREADABLE]) | "DeadLetters" >> beam.Flatten()
     | "SerialiseDeadLetters" >> beam.Map(to_json_line)
     | "WriteDeadLetters" >> beam.io.WriteToText(
         os.path.join(dead_letter_dir, "dead-letters"), file_name_suffix=".jsonl",
         coder=beam.coders.BytesCoder()))
    result = pipeline.run()
    result.wait_until_finish()
    return Accounting.from_result(result)
