"""Whole-object S3 reads and writes for Beam workers, through one boto3 client per worker.

Beam's S3 file system builds a new boto3 client for every file it opens or
creates (about 0.5 s each against a local server) and uploads in three
requests. The raw archive writes and reads many small files, so its workers
keep one client, built from the S3 options Beam gave its file systems
(`--s3_endpoint_url`, `--s3_region_name`, ...), and move each file in one
request. `S3Objects.for_path` is None for other paths (and when Beam has set
no options), which then go through Beam's `FileSystems`.
"""
from __future__ import annotations

import io
from typing import Any, BinaryIO

from apache_beam.io.aws.s3io import parse_s3_path
from apache_beam.io.filesystems import FileSystems


class S3Objects:
    """One boto3 S3 client, built on first use from Beam's S3 options."""

    def __init__(self) -> None:
        self._client: Any = None

    def for_path(self, path: str) -> "S3Objects | None":
        """This client for an `s3://` path once Beam's options are set, else None."""
        if FileSystems.get_scheme(path) != "s3" or _beam_options() is None:
            return None
        if self._client is None:
            from apache_beam.io.aws.clients.s3.boto3_client import Client  # needs boto3
            self._client = Client(options=_beam_options()).client
        return self

    def put(self, path: str, body: bytes, content_type: str) -> None:
        """Store `body` at `path` in one request: the object appears whole or not at all."""
        bucket, key = parse_s3_path(path)
        self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def open(self, path: str) -> BinaryIO:
        """The object at `path` as a buffered stream read front to back (no seeking)."""
        bucket, key = parse_s3_path(path)
        return io.BufferedReader(_Body(self._client.get_object(Bucket=bucket, Key=key)["Body"]),
                                 buffer_size=1 << 20)


class _Body(io.RawIOBase):
    """botocore's streaming body as a raw stream, so that it can be buffered and read by line."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def _beam_options() -> Any:
    """The options Beam gave its file systems (set on every worker)."""
    return FileSystems._pipeline_options  # pylint: disable=protected-access
