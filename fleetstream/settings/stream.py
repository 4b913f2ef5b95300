"""The streaming job's settings: `flink-runner.yaml`, validated at start-up (`StreamSettings`).

    applications: config.yaml          # the applications' configuration (DATA-CONTRACTS §6)
    flink: {job_endpoint: localhost:8099, parallelism: 2, ...}      # FlinkSettings
    kafka: {bootstrap_servers: 127.0.0.1:9092, start: earliest, raw_topics: {...}, ...}
    pipeline: {permissions: keyed_state, reorder_window_s: 2.0, vehicle_shards: 64, ...}
    archive: {root: s3://bucket/archive, ...}                      # optional

Every problem raises ConfigError naming the key and the fix.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from fleetstream.io.archive.raw_archive import ArchiveSettings
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.runtime.checkpoint_buffer import FINISH_BUNDLE_BEFORE_CHECKPOINTING
from fleetstream.schemas.config import Config
from fleetstream.schemas.errors import ConfigError, refuse_unknown
from fleetstream.schemas.timestamps import to_epoch_ms
from fleetstream.settings.config import load_config
from fleetstream.settings.topics import (ACTIVATIONS_TOPIC, DEAD_LETTERS_TOPIC, DEFAULT_RAW_TOPICS,
                                         DELIVERED_TOPIC)
from fleetstream.settings.yaml_file import read_yaml
from fleetstream.transforms.order_and_permit_keyed import DEFAULT_VEHICLE_SHARDS


@dataclass(frozen=True)
class OrderSettings:
    """Knobs of OrderPerVehicle."""

    reorder_window_s: float = 2.0
    dedupe_horizon_s: float = 600.0


PERMISSION_MODES = ("keyed_state", "side_input")
RAW_READERS = ("kafkaio", "python")


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

    def pipeline_options(self, extra: list[str] | tuple[str, ...] = ()) -> PipelineOptions:
        """Portable-runner options for the Flink job server."""
        args = ["--runner=PortableRunner", f"--job_endpoint={self.job_endpoint}",
                f"--environment_type={self.environment_type}",
                f"--environment_config={self.environment_config}",
                f"--parallelism={self.parallelism}", "--streaming",
                f"--checkpointing_interval={self.checkpointing_interval_ms}",
                # the Flink runner's spelling; `--max_bundle_time_millis` is silently ignored
                f"--max_bundle_time_mills={self.max_bundle_time_ms}",
                f"--experiments=data_buffer_time_limit_ms={self.data_buffer_time_limit_ms}",
                FINISH_BUNDLE_BEFORE_CHECKPOINTING,
                "--externalized_checkpoints_enabled",
                "--retain_externalized_checkpoints_on_cancellation"]
        if self.savepoint_path:
            args.append(f"--savepoint_path={self.savepoint_path}")
        return PipelineOptions(args + list(extra))


@dataclass(frozen=True)
class StreamSettings:
    """Everything `fleetstream stream` needs, from flink-runner.yaml."""

    config: Config
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    raw_topics: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_RAW_TOPICS))
    activations_topic: str = ACTIVATIONS_TOPIC
    dead_letters_topic: str = DEAD_LETTERS_TOPIC
    delivered_topic: str | None = DELIVERED_TOPIC
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


def load_stream_settings(path: str | Path) -> StreamSettings:
    """Read and validate flink-runner.yaml; ConfigError names the key at fault."""
    path = Path(path)
    raw = read_yaml(path, "stream settings file") or {}
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
        topics.get("activations_topic", ACTIVATIONS_TOPIC),
        topics.get("dead_letters_topic", DEAD_LETTERS_TOPIC),
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
