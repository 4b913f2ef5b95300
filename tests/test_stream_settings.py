"""flink-runner.yaml: the repository's own file loads, and every bad entry is refused by name."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fleetstream.io.archive.raw_archive import ArchiveSettings
from fleetstream.pipelines.cli import main
from fleetstream.schemas.errors import ConfigError
from fleetstream.settings.stream import load_stream_settings

ROOT = Path(__file__).resolve().parents[1]


def settings_file(folder: Path, **sections) -> Path:
    (folder / "config.yaml").write_text((ROOT / "examples" / "config.yaml").read_text())
    path = folder / "flink-runner.yaml"
    path.write_text(yaml.safe_dump({"applications": "config.yaml", **sections}))
    return path


def test_the_repository_settings_load() -> None:
    settings = load_stream_settings(ROOT / "flink-runner.yaml")
    assert settings.flink.parallelism == 2 and settings.kafka.start == "earliest"
    assert settings.raw_topics["tesla"] == "raw.tesla" and settings.archive is None
    assert settings.config.applications
    assert settings.kafka.raw_reader == "kafkaio"


def test_the_flink_section_becomes_the_jobs_pipeline_options(tmp_path: Path) -> None:
    from apache_beam.options.pipeline_options import DebugOptions, StandardOptions

    settings = load_stream_settings(settings_file(
        tmp_path, flink={"max_bundle_time_ms": 50, "data_buffer_time_limit_ms": 20,
                         "checkpointing_interval_ms": 5000}))
    options = settings.flink.pipeline_options(["--experiments=other"])
    assert options.view_as(StandardOptions).streaming
    assert options.view_as(DebugOptions).experiments == ["data_buffer_time_limit_ms=20", "other"]
    extra = options.get_all_options(retain_unknown_options=True)
    assert extra["max_bundle_time_mills"] == "50" and extra["checkpointing_interval"] == "5000"
    assert extra["finish_bundle_before_checkpointing"] is True   # runtime.checkpoint_buffer


def test_archive_section_start_time_and_delivery_shards_are_read(tmp_path: Path) -> None:
    settings = load_stream_settings(settings_file(
        tmp_path, archive={"path": "s3://bucket/fleet", "format": "avro", "window_s": 600},
        kafka={"start": "2026-03-01T08:00:00Z"}))
    assert settings.archive == ArchiveSettings("s3://bucket/fleet", "avro", 600)
    assert settings.kafka.start == 1772352000000
    assert settings.delivery_shards == 1
    shards = load_stream_settings(settings_file(
        tmp_path, pipeline={"delivery_shards": 8, "vehicle_shards": 256}))
    assert (shards.delivery_shards, shards.vehicle_shards) == (8, 256)
    python = load_stream_settings(settings_file(tmp_path, kafka={"raw_reader": "python"}))
    assert python.kafka.raw_reader == "python"


@pytest.mark.parametrize("sections, named", [
    ({"archive": {"path": "s3://b/f", "window_s": 7}}, "archive.window_s"),
    ({"archive": {"path": "s3://b/f", "compress": True}}, "unknown key(s) compress"),
    ({"archive": {"format": "avro"}}, "archive.path"),
    ({"kafka": {"start": "yesterday"}}, "kafka.start"),
    ({"kafka": {"raw_reader": "java"}}, "kafka.raw_reader must be one of kafkaio, python"),
    ({"pipeline": {"permissions": "acl"}}, "pipeline.permissions"),
    ({"pipeline": {"delivery_shards": 0}}, "pipeline.delivery_shards"),
    ({"pipeline": {"delivery_shards": "many"}}, "pipeline.delivery_shards"),
    ({"pipeline": {"vehicle_shards": -1}}, "pipeline.vehicle_shards"),
    ({"flink": {"paralelism": 2}}, "unknown key(s) paralelism"),
    ({"sinks": {}}, "unknown key(s) sinks"),
])
def test_bad_settings_are_refused_naming_the_entry(tmp_path: Path, sections: dict,
                                                   named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_stream_settings(settings_file(tmp_path, **sections))


def test_stream_command_exits_2_on_bad_settings(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(tmp_path, archive={"path": "s3://b/f", "shards": 0})
    assert main(["stream", "--config", str(path)]) == 2
    assert "archive.shards" in capsys.readouterr().err


@pytest.mark.parametrize("end, code", [("DONE", 0), ("CANCELLED", 1), ("FAILED", 1)])
def test_stream_wait_exits_by_the_state_the_job_ends_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        end: str, code: int) -> None:
    """`stream --wait` asks for the job's state until it ends (the submitted job's
    streams are closed), and only a job that ends done exits 0."""
    import fleetstream.pipelines.stream as stream
    import fleetstream.runtime.job_streams as job_streams

    class Job:
        states = iter(["RUNNING", "RUNNING", "RUNNING", end])

        @property
        def state(self) -> str:
            return next(self.states)

    monkeypatch.setattr(stream, "submit_stream", lambda *args, **kwargs: Job())
    monkeypatch.setattr(job_streams.time, "sleep", lambda s: None)
    assert main(["stream", "--config", str(ROOT / "flink-runner.yaml"), "--wait"]) == code
    assert f"ended in state {end}" in capsys.readouterr().err
