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
also writes every raw envelope to the raw archive (`ArchiveRawEnvelopes`).
Read positions live in Flink's checkpoints (see `kafka_topics`), so a job
restarted from its last checkpoint or savepoint loses nothing; documents it
sends twice carry the same `message_id`.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import apache_beam as beam
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from fleetstream.io.base import ConfigError, refuse_unknown
from fleetstream.io.kafka_offsets import reset_group_offsets
from fleetstream.io.kafka_activations import PublishReport, publish_activations
from fleetstream.io.kafka_producer import mark_partitions
from fleetstream.io.kafka_topics import (INVALID, KafkaSettings, ReadActivationsFromKafka,
                                         ReadRawFromKafka, WriteJsonToKafka)
from fleetstream.io.raw_archive import ArchiveRawEnvelopes, ArchiveSettings
from fleetstream.local.topics import Topic, create_topics
from fleetstream.mappers import MAPPERS
from fleetstream.pipelines.fleet import DeliverFleet, OrderSettings
from fleetstream.pipelines.job_streams import release_job_streams
from fleetstream.pipelines.replay import check_sinks
from fleetstream.schemas.config import Config, load_config
from fleetstream.schemas.timestamps import to_epoch_ms
from fleetstream.transforms.group_in_bundle import Unbatch
from fleetstream.transforms.permit_by_activation import (DEFAULT_VEHICLE_SHARDS, ActivationTable,
                                                         OrderAndPermitKeyed,
                                                         PermitByActivation)

PERMISSION_MODES = ("keyed_state", "side_input")
RAW_READERS = ("kafkaio", "python")
#: source -> its raw topic, unless kafka.raw_topics says otherwise
DEFAULT_RAW_TOPICS: Mapping[str, str] = {source: f"raw.{source}" for source in MAPPERS}


@dataclass(frozen=True)
class FlinkSettings:
    job_endpoint: str = "localhost:8099"
    environment_type: str = "EXTERNAL"
    environment_config: str = "localhost:50000"
    parallelism: int = 2
    checkpointing_interval_ms: int = 30_000
    #: how long a bundle may collect elements; each of the job's fused stages adds up to this
    #: much latency (Beam's default, 1000, gave a 4.5 s floor; docs/benchmarks.md)
    max_bundle_time_ms: int = 100
    #: how long the runner may hold elements for a Python worker before sending them (Beam's
    #: default waits for 1 MB or the bundle's end: ~130 ms more latency at 500 msg/s)
    data_buffer_time_limit_ms: int = 5
    savepoint_path: str | None = None


@dataclass(frozen=True)
class StreamSettings:
    """Everything `fleetstream stream` needs, from flink-runner.yaml."""

    config: Config
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    raw_topics: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_RAW_TOPICS))
    activations_topic: str = "activations"
    dead_letters_topic: str = "dead-letters"
    delivered_topic: str | None = "delivered"
    order: OrderSettings = field(default_factory=OrderSettings)
    permissions: str = "keyed_state"
    archive: ArchiveSettings | None = None
    #: batching keys per application in Deliver (see Deliver): more spread one
    #: application's batching over more task slots, each shard writing its own batches
    delivery_shards: int = 1
    #: keys of the ordering and activation step (OrderAndPermitKeyed): a bundle's
    #: messages of one shard cross to it together; about 1,000 vehicles per shard or fewer
    vehicle_shards: int = DEFAULT_VEHICLE_SHARDS

    def restored_from(self, savepoint_path: str) -> "StreamSettings":
        """These settings, for a job restored from a savepoint or retained checkpoint."""
        return dataclasses.replace(self, flink=dataclasses.replace(
            self.flink, savepoint_path=savepoint_path))

    def pipeline_options(self, extra: list[str] | tuple[str, ...] = ()) -> PipelineOptions:
        """Portable-runner options for the Flink job server."""
        args = ["--runner=PortableRunner", f"--job_endpoint={self.flink.job_endpoint}",
                f"--environment_type={self.flink.environment_type}",
                f"--environment_config={self.flink.environment_config}",
                f"--parallelism={self.flink.parallelism}", "--streaming",
                f"--checkpointing_interval={self.flink.checkpointing_interval_ms}",
                # the Flink runner's spelling; `--max_bundle_time_millis` is silently ignored
                f"--max_bundle_time_mills={self.flink.max_bundle_time_ms}",
                f"--experiments=data_buffer_time_limit_ms={self.flink.data_buffer_time_limit_ms}",
                "--externalized_checkpoints_enabled",
                "--retain_externalized_checkpoints_on_cancellation"]
        if self.flink.savepoint_path:
            args.append(f"--savepoint_path={self.flink.savepoint_path}")
        return PipelineOptions(args + list(extra))


def load_stream_settings(path: str | Path) -> StreamSettings:
    """Read and validate flink-runner.yaml; ConfigError names the key at fault."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"stream settings file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    where = str(path)
    refuse_unknown(where, raw, {"applications", "flink", "kafka", "pipeline", "archive"})
    if not isinstance(raw.get("applications"), str):
        raise ConfigError(f"{where}: `applications:` must name the applications' configuration "
                          f"file (DATA-CONTRACTS §6)")
    config = load_config(path.parent / raw["applications"])
    flink = FlinkSettings(**_section(raw, "flink", FlinkSettings, where))
    kafka_raw = _section(raw, "kafka", None, where)
    topics = {k: kafka_raw.pop(k) for k in ("raw_topics", "activations_topic",
                                            "dead_letters_topic", "delivered_topic")
              if k in kafka_raw}
    if "start" in kafka_raw:
        kafka_raw["start"] = parse_start(kafka_raw["start"], where)
    refuse_unknown(f"{where}: kafka", kafka_raw, set(KafkaSettings.__dataclass_fields__))
    _one_of(where, "kafka.raw_reader", kafka_raw.get("raw_reader", KafkaSettings.raw_reader),
            RAW_READERS)
    pipeline = _section(raw, "pipeline", None, where)
    permissions = _one_of(where, "pipeline.permissions",
                          pipeline.pop("permissions", "keyed_state"), PERMISSION_MODES)
    shards = {name: _whole_number(where, name, pipeline.pop(name, default))
              for name, default in (("delivery_shards", 1),
                                    ("vehicle_shards", DEFAULT_VEHICLE_SHARDS))}
    refuse_unknown(f"{where}: pipeline", pipeline, set(OrderSettings.__dataclass_fields__))
    raw_topics = topics.get("raw_topics", DEFAULT_RAW_TOPICS)
    if not isinstance(raw_topics, dict) or not raw_topics:
        raise ConfigError(f"{where}: kafka.raw_topics must map each source to its topic")
    archive = (ArchiveSettings.from_options(f"{where}: archive", raw["archive"])
               if raw.get("archive") is not None else None)
    return StreamSettings(
        config, flink, KafkaSettings(**kafka_raw), dict(raw_topics),
        topics.get("activations_topic", "activations"),
        topics.get("dead_letters_topic", "dead-letters"),
        topics.get("delivered_topic"), OrderSettings(**pipeline), permissions, archive,
        **shards)


def _one_of(where: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _whole_number(where: str, name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: pipeline.{name} must be a whole number >= 1, "
                          f"got {value!r}")
    return value


def _section(raw: dict, name: str, cls: Any, where: str) -> dict:
    section = raw.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: `{name}:` must be a mapping")
    if cls is not None:
        refuse_unknown(f"{where}: {name}", section, set(cls.__dataclass_fields__))
    return dict(section)


def parse_start(value: Any, where: str) -> str | int:
    """`earliest`, `latest`, or a time as epoch ms; ConfigError otherwise."""
    if value in ("earliest", "latest"):
        return value
    try:
        return to_epoch_ms(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: kafka.start must be earliest, latest or a time, "
                          f"got {value!r}") from None


def build_stream_pipeline(pipeline: beam.Pipeline, settings: StreamSettings) -> None:
    """Add the streaming job's steps to `pipeline`."""
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
        delivery_shards=settings.delivery_shards, batches=True)
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
    create_topics(settings.kafka.bootstrap_servers, [
        *(Topic(topic) for topic in settings.raw_topics.values()),
        Topic(settings.activations_topic, 1, {"cleanup.policy": "compact"}),
        *(Topic(t) for t in (settings.dead_letters_topic, settings.delivered_topic) if t)])


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
    ensure_topics(settings)
    kafka = settings.kafka
    if not settings.flink.savepoint_path and (reset_offsets or isinstance(kafka.start, int)):
        reset_group_offsets(kafka.bootstrap_servers, kafka.consumer_group,
                            settings.raw_topics.values(), kafka.start)
    published = publish_activations(settings.kafka.bootstrap_servers,
                                    settings.activations_topic, settings.config.activations)
    print(f"fleetstream stream: activations: {describe_published(published)}", file=sys.stderr)
    mark_partitions(settings.kafka.bootstrap_servers, settings.activations_topic)
    pipeline = beam.Pipeline(options=settings.pipeline_options(extra_options))
    build_stream_pipeline(pipeline, settings)
    result = pipeline.run()
    release_job_streams(result)
    return result
