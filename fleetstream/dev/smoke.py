"""Tiny pipelines that check the local Flink runtime end to end.

Run with `beam.beam_python()` (the project's Python), which has the job
server's apache-beam:

    python -m fleetstream.dev.smoke text OUTPUT            # Create -> Map -> file
    python -m fleetstream.dev.smoke kafka OUTPUT TOPIC N   # ReadFromKafka (N records) -> file

Each writes one file, OUTPUT, with one line per element.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from fleetstream.runtime.job_streams import wait_until_done


def portable_options(job_endpoint: str = "localhost:8099",
                     worker_pool: str = "localhost:50000", streaming: bool = False,
                     extra: Sequence[str] = ()) -> PipelineOptions:
    """Options that run a pipeline on the local job server with the local worker pool."""
    return PipelineOptions([
        "--runner=PortableRunner", f"--job_endpoint={job_endpoint}",
        "--environment_type=EXTERNAL", f"--environment_config={worker_pool}",
        "--parallelism=1", *(["--streaming"] if streaming else []), *extra])


def _write(lines: beam.PCollection, output: str) -> None:
    _ = lines | beam.io.WriteToText(output, shard_name_template="")


def text_pipeline(output: str, options: PipelineOptions) -> None:
    """Upper-case three words into `output`."""
    pipeline = beam.Pipeline(options=options)
    _write(pipeline | beam.Create(["fleet", "stream", "flink"]) | beam.Map(str.upper), output)
    wait_until_done(pipeline.run())


def kafka_pipeline(output: str, topic: str, records: int, options: PipelineOptions,
                   bootstrap: str = "127.0.0.1:9092",
                   expansion_service: str = "localhost:8088") -> None:
    """Read `records` records of `topic` through the Java KafkaIO into `output` as key=value."""
    from apache_beam.io.kafka import ReadFromKafka

    pipeline = beam.Pipeline(options=options)
    read = pipeline | ReadFromKafka(
        consumer_config={"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest"},
        topics=[topic], max_num_records=records, expansion_service=expansion_service)
    _write(read | beam.MapTuple(lambda key, value: f"{key.decode()}={value.decode()}"), output)
    wait_until_done(pipeline.run())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="pipeline", required=True)
    text = commands.add_parser("text")
    text.add_argument("output")
    kafka = commands.add_parser("kafka")
    kafka.add_argument("output")
    kafka.add_argument("topic")
    kafka.add_argument("records", type=int)
    args = parser.parse_args(argv)
    if args.pipeline == "text":
        text_pipeline(args.output, portable_options())
    else:
        kafka_pipeline(args.output, args.topic, args.records, portable_options())


if __name__ == "__main__":
    main()
