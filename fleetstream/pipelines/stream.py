"""The streaming job: raw Kafka topics -> map -> order -> permit -> deliver, on Flink.

    fleetstream stream --config flink-runner.yaml

`flink-runner.yaml` (validated at start-up, `StreamSettings`) says where the
job goes (Beam's Flink job server, the SDK worker pool, parallelism,
checkpointing), how it reaches Kafka, and where the applications'
configuration is. The job reads each source's raw topic (with Python consumers,
`ReadKafkaPartitions`, or KafkaIO), keeps
per-vehicle order in keyed state, joins activation events from the compacted
`activations` topic (the configuration's own are published there at
submission), and delivers through each application's sink. Dead letters
(mapping, ingest, delivery) go to the `dead-letters` topic and, optionally,
every document to the `delivered` topic. With an `archive:` section the job
also writes every raw envelope to the raw archive (`ArchiveRawEnvelopes`). With a `state:`
section in the applications' configuration every mapped message's entries go to the
latest-state store in Redis (`WriteLatestState`, DATA-CONTRACTS §10).
Read positions live in Flink's checkpoints (see `kafka_topics`), so a job
restarted from its last checkpoint or savepoint loses nothing; documents it
sends twice carry the same `message_id`.
"""
from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.runners.runner import PipelineResult

from fleetstream.io.archive.raw_archive import ArchiveRawEnvelopes
from fleetstream.io.kafka.admin import create_topics
from fleetstream.io.kafka.offsets import reset_group_offsets
from fleetstream.io.redis.state_store import check_state_store
from fleetstream.io.redis.write_state import WriteLatestState
from fleetstream.io.kafka.activations import PublishReport, publish_activations
from fleetstream.io.kafka.producer import mark_partitions
from fleetstream.io.kafka.transforms import (INVALID, ReadActivationsFromKafka, ReadRawFromKafka,
                                             WriteJsonToKafka)
from fleetstream.pipelines.fleet import DeliverFleet
from fleetstream.pipelines.replay import check_sinks
from fleetstream.runtime.group_in_bundle import Unbatch
from fleetstream.runtime.job_streams import release_job_streams
from fleetstream.settings.stream import StreamSettings
from fleetstream.settings.topics import job_topics, topics_read
from fleetstream.transforms.order_and_permit_keyed import OrderAndPermitKeyed
from fleetstream.transforms.permit_by_activation import ActivationTable, PermitByActivation


def build_stream_pipeline(pipeline: beam.Pipeline, settings: StreamSettings) -> None:
    """Add the streaming job's steps to `pipeline`; with a `state:` section, the latest
    state is written and geofence events are appended to their Redis streams."""
    config, kafka = settings.config, settings.kafka
    raw = pipeline | "ReadRaw" >> ReadRawFromKafka(kafka, settings.raw_topics)
    live = pipeline | "ReadActivationEvents" >> ReadActivationsFromKafka(
        kafka, settings.activations_topic)
    events = live.events
    if settings.permissions == "keyed_state":
        permit = OrderAndPermitKeyed(config.applications, events,
                                     settings.order.reorder_window_s,
                                     settings.order.dedupe_horizon_s,
                                     shards=settings.vehicle_shards)
    else:
        table = (events
                 | "RefreshActivations" >> beam.WindowInto(
                     beam.window.GlobalWindows(),
                     trigger=beam.trigger.Repeatedly(beam.trigger.AfterProcessingTime(2)),
                     accumulation_mode=beam.trigger.AccumulationMode.ACCUMULATING)
                 | "ActivationTable" >> ActivationTable())
        permit = PermitByActivation(config.applications, table)
    if settings.archive:
        _ = (raw.envelopes
             | "Unbatch" >> Unbatch()
             | "ArchiveRaw" >> ArchiveRawEnvelopes(settings.archive))
    fleet = raw.envelopes | "DeliverFleet" >> DeliverFleet(
        config.applications, permit, settings.order, bounded=False,
        delivery_shards=settings.delivery_shards, batches=True, redis_url=config.redis_url)
    if config.state is not None:
        _ = fleet.mapped | "WriteLatestState" >> WriteLatestState(config.state.redis,
                                                                 batches=True)
    if settings.delivered_topic:
        _ = (fleet.records
             | "DeliveredRecords" >> beam.Map(lambda pairs: [(r.vin, r.document)
                                                             for _, r in pairs])
             | "WriteDelivered" >> WriteJsonToKafka(kafka, settings.delivered_topic,
                                                    batches=True))
    _ = ((fleet.dead_letters, raw.invalid, live[INVALID])
         | "AllDeadLetters" >> beam.Flatten()
         | "WriteDeadLetters" >> WriteJsonToKafka(kafka, settings.dead_letters_topic,
                                                  key_field="source"))


def ensure_topics(settings: StreamSettings) -> None:
    """Create the job's topics that do not exist yet (activations compacted)."""
    create_topics(settings.kafka.bootstrap_servers, job_topics(
        topics_read(settings.raw_topics), settings.activations_topic,
        settings.dead_letters_topic, settings.delivered_topic))


def describe_published(report: PublishReport) -> str:
    """One line on what `publish_activations` did at submission."""
    return (f"{report.written} written, {report.superseded} of the configuration's not "
            f"(the topic has them or newer ones), {report.healed} stale key(s) healed")


def submit_stream(settings: StreamSettings, extra_options: list[str] | tuple[str, ...] = (),
                  reset_offsets: bool = False) -> PipelineResult:
    """Check the sinks, create missing topics, seed the configuration's activations, submit.

    The configuration's activation events go to the activations topic (keyed
    `vin/application`, compacted; the newest `at` wins), so the job has one
    source of activations and a restart re-reads them with everything else:
    only those newer than the topic's own are written (`publish_activations`),
    so a redeploy never puts a stale approval over a newer revocation.
    Unless the job is restored from a savepoint, the consumer group's offsets
    on the raw topics are first moved to `kafka.start` when `reset_offsets` is
    set or `kafka.start` is a time. The result's job service streams are closed
    (`release_job_streams`): ask `result.state` for the job's state.
    """
    check_sinks(settings.config.applications)
    if settings.config.state is not None:
        check_state_store(settings.config.state.redis)
    ensure_topics(settings)
    kafka = settings.kafka
    if not settings.flink.savepoint_path and (reset_offsets or isinstance(kafka.start, int)):
        reset_group_offsets(kafka.bootstrap_servers, kafka.consumer_group,
                            topics_read(settings.raw_topics), kafka.start)
    published = publish_activations(settings.kafka.bootstrap_servers,
                                    settings.activations_topic, settings.config.activations)
    print(f"fleetstream stream: activations: {describe_published(published)}", file=sys.stderr)
    mark_partitions(settings.kafka.bootstrap_servers, settings.activations_topic)
    pipeline = beam.Pipeline(options=settings.flink.pipeline_options(extra_options))
    build_stream_pipeline(pipeline, settings)
    result = pipeline.run()
    release_job_streams(result)
    return result
