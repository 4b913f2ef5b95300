"""`fleetstream replay` reading archived envelopes from S3 (a real moto server) through Beam's S3 filesystem."""
from __future__ import annotations

import glob
import gzip
import uuid
from pathlib import Path

import boto3
import orjson
import pytest
import yaml

from fleetstream.pipelines.cli import main
from fleetstream.simulator import activations, simulate, write_envelopes

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]


def test_replay_reads_gzip_envelopes_from_s3(moto_service, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    local = tmp_path / "raw.jsonl.gz"
    count = write_envelopes(local, simulate(6, messages=200, seed=4))
    bucket = f"fleetstream-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_service.endpoint_url,
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(local), bucket, "raw/tesla/2026/03/01/08/part-0.jsonl.gz")
    with open(tmp_path / "activations.jsonl", "wb") as out:
        for event in activations(6, ["fleet"], seed=4):
            out.write(orjson.dumps(event) + b"\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "applications": [{"id": "fleet", "permissions": ["diagnostics.odometer"],
                          "sink": {"type": "file", "path": "unused"}}],
        "activations": "activations.jsonl"}))
    code = main(["replay", "--input", f"s3://{bucket}/raw/*/2026/03/01/*/*.jsonl.gz",
                 "--config", str(tmp_path / "config.yaml"), "--output", str(tmp_path / "out"),
                 "--s3-endpoint-url", moto_service.endpoint_url, "--s3-region", "us-east-1",
                 "--s3-access-key-id", "test", "--s3-secret-access-key", "test"])
    assert code == 0
    assert f"read {count} = delivered" in capsys.readouterr().out
    documents = [orjson.loads(line) for path in glob.glob(str(tmp_path / "out" / "fleet" / "*"))
                 for line in (gzip.open(path) if path.endswith(".gz") else open(path, "rb"))]
    assert documents and all(set(d["data"]) == {"diagnostics"} for d in documents)
