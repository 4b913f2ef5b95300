"""S3Sink: each batch as one object in an S3 bucket (or an S3-compatible store).

Configuration (`sink:` of an application)::

    sink:
      type: s3
      bucket: fleet-a-telemetry          # required
      prefix: fleetstream                # optional folder in front of every key
      path_template: "{application_id}/{yyyy}/{mm}/{dd}/{HH}/{batch_id}"
      format: jsonl                      # jsonl or avro
      gzip: false                        # jsonl: .jsonl.gz; avro: deflate codec
      region: eu-central-1               # optional; else the AWS configuration
      endpoint_url: http://127.0.0.1:5000   # optional: moto, MinIO, ...
      access_key_id: ...                 # optional pair; else the AWS credential chain
      secret_access_key: ...

Formats and object names are described in `fleetstream.io.sinks.object.format`. An
object's key is derived from the batch's content, so a retried batch
overwrites its own object. `check()` refuses a bucket that does not exist or
cannot be reached.
"""
from __future__ import annotations

from typing import Any, Mapping

from fleetstream.io.sinks.aws import (AWS_OPTIONS, WRITE_CONFIG, aws_client,
                                      check_credential_pair, check_exists)
from fleetstream.io.sinks.object.format import ObjectSink
from fleetstream.schemas.delivery import Batching


class S3Sink(ObjectSink):
    """One S3 object per batch."""

    TYPE = "s3"
    DEFAULT_BATCHING = Batching(max_records=50_000, max_bytes=64 << 20, max_delay_s=120.0)
    REQUIRED = frozenset({"bucket"})
    OPTIONAL = ObjectSink.OPTIONAL | AWS_OPTIONS

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        self.bucket = self.store_name("bucket")
        check_credential_pair(self.where, options)
        self._client: Any = None

    def check(self) -> None:
        check_exists(self.where, "bucket", self.bucket,
                     lambda: aws_client("s3", self.options).head_bucket(Bucket=self.bucket))

    def open(self) -> None:
        self._client = aws_client("s3", self.options, WRITE_CONFIG)

    def put(self, name: str, body: bytes, content_type: str) -> None:
        if self._client is None:
            self.open()
        self._client.put_object(Bucket=self.bucket, Key=name, Body=body,
                                ContentType=content_type)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
