"""S3Sink against a real moto server."""
from __future__ import annotations

import uuid

import boto3
import pytest

from fleetstream.io.sinks.object.s3 import S3Sink
from fleetstream.io.sinks.registry import build_sink
from fleetstream.schemas.errors import ConfigError

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]


@pytest.fixture
def aws_options(moto_service):
    return {"region": "eu-central-1", "endpoint_url": moto_service.endpoint_url,
            "access_key_id": "test", "secret_access_key": "test"}


@pytest.fixture
def bucket(aws_options):
    name = f"fleetstream-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", region_name=aws_options["region"],
                          endpoint_url=aws_options["endpoint_url"],
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=name, CreateBucketConfiguration={
        "LocationConstraint": aws_options["region"]})
    return client, name


def test_writes_objects_idempotently_in_each_format(aws_options, bucket, check_object_sink):
    client, name = bucket

    def stored():
        listing = client.list_objects_v2(Bucket=name).get("Contents", [])
        return {o["Key"]: client.get_object(Bucket=name, Key=o["Key"])["Body"].read()
                for o in listing}

    check_object_sink(lambda extra: S3Sink("fleet-a", {**aws_options, "bucket": name, **extra}),
                      stored)
    head = client.head_object(Bucket=name, Key=next(iter(stored())))
    assert head["ContentType"]


def test_check_accepts_an_existing_bucket(aws_options, bucket):
    S3Sink("fleet-a", {**aws_options, "bucket": bucket[1]}).check()


def test_check_refuses_a_missing_bucket(aws_options):
    with pytest.raises(ConfigError, match=r"\.bucket: bucket 'no-such-bucket' does not exist"):
        S3Sink("fleet-a", {**aws_options, "bucket": "no-such-bucket"}).check()


@pytest.mark.parametrize("options, message", [
    ({"type": "s3"}, r": sink type 's3' needs bucket"),
    ({"type": "s3", "bucket": "b-1", "colour": "red"}, r": unknown key\(s\) colour"),
    ({"type": "s3", "bucket": "b"}, r"\.bucket: expected a bucket name of 3-63"),
    ({"type": "s3", "bucket": "b-1", "access_key_id": "k"}, r"\.secret_access_key: needed"),
    ({"type": "s3", "bucket": "b-1", "format": "csv"}, r"\.format"),
])
def test_config_errors_name_the_key(options, message):
    with pytest.raises(ConfigError, match=r"^applications\[fleet-a\]\.sink" + message):
        build_sink("fleet-a", options)
