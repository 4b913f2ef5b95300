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

Formats and object names are described in `fleetstream.io.object_format`. An
object's key is derived from the batch's content, so a retried batch
overwrites its own object. `check()` refuses a bucket that does not exist or
cannot be reached.
"""
from __future__ import annotations

from typing import Any, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from fleetstream.io.aws import AWS_OPTIONS, aws_client, check_credential_pair
from fleetstream.io.base import Batching, ConfigError
from fleetstream.io.object_format import ObjectSink


class S3Sink(ObjectSink):
    """One S3 object per batch."""

    TYPE = "s3"
    DEFAULT_BATCHING = Batching(max_records=50_000, max_bytes=64 << 20, max_delay_s=120.0)
    REQUIRED = frozenset({"bucket"})
    OPTIONAL = ObjectSink.OPTIONAL | AWS_OPTIONS

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        self.bucket = options["bucket"]
        if not isinstance(self.bucket, str) or not 3 <= len(self.bucket) <= 63:
            raise ConfigError(f"{self.where}.bucket: expected a bucket name of 3-63 "
                              f"characters, got {self.bucket!r}")
        check_credential_pair(self.where, options)
        self._client: Any = None

    def check(self) -> None:
        try:
            aws_client("s3", self.options).head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "?")
            raise ConfigError(f"{self.where}.bucket: bucket {self.bucket!r} does not exist or "
                              f"is not accessible ({code})") from None
        except BotoCoreError as error:
            raise ConfigError(f"{self.where}: cannot reach S3 for bucket {self.bucket!r}: "
                              f"{error}") from None

    def open(self) -> None:
        self._client = aws_client("s3", self.options)

    def put(self, name: str, body: bytes, content_type: str) -> None:
        if self._client is None:
            self.open()
        self._client.put_object(Bucket=self.bucket, Key=name, Body=body,
                                ContentType=content_type)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
