"""AzureBlobSink: each batch as one block blob in an Azure Storage container.

Configuration (`sink:` of an application)::

    sink:
      type: azure_blob
      container: fleet-a-telemetry       # required, 3-63 characters
      connection_string: "DefaultEndpointsProtocol=https;AccountName=...;AccountKey=..."
      # or, instead of connection_string:
      account_url: https://<account>.blob.core.windows.net
      credential: <account key or SAS token>   # with account_url; omit when the
                                               # URL carries a SAS token
      prefix: fleetstream                # optional folder in front of every blob name
      path_template: "{application_id}/{yyyy}/{mm}/{dd}/{HH}/{batch_id}"
      format: jsonl                      # jsonl or avro
      gzip: false                        # jsonl: .jsonl.gz; avro: deflate codec

Exactly one of `connection_string` and `account_url` is given. Formats and
blob names are described in `fleetstream.io.sinks.object.format`; a blob's name is
derived from the batch's content and uploads overwrite, so a retried batch
replaces its own blob. `check()` refuses a container that does not exist or
cannot be reached.
"""
from __future__ import annotations

from typing import Any, Mapping

from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient, ContentSettings

from fleetstream.io.sinks.object.format import ObjectSink
from fleetstream.schemas.delivery import Batching
from fleetstream.schemas.errors import ConfigError

#: no retry of the client's own and bounded timeouts (connect 5 s, each read 10 s; the
#: SDK's defaults are 20 s and 60 s): Deliver retries whole batches on its timer, so the
#: SDK's minutes-long default is cut, a write ends within about `WRITE_TIMEOUT_S` against
#: an unreachable account and at once against one that refuses connections (one SDK
#: retry, with its 1-4 s backoff, held the bundle's other applications for most of an
#: outage)
_CLIENT_OPTIONS = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 10}


class AzureBlobSink(ObjectSink):
    """One block blob per batch."""

    TYPE = "azure_blob"
    DEFAULT_BATCHING = Batching(max_records=50_000, max_bytes=64 << 20, max_delay_s=120.0)
    REQUIRED = frozenset({"container"})
    OPTIONAL = ObjectSink.OPTIONAL | {"connection_string", "account_url", "credential"}

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        self.container = self.store_name("container")
        if ("connection_string" in options) == ("account_url" in options):
            raise ConfigError(f"{self.where}: give exactly one of connection_string and "
                              f"account_url")
        if "credential" in options and "account_url" not in options:
            raise ConfigError(f"{self.where}.credential: only used with account_url")
        self._client: ContainerClient | None = None

    def _container_client(self) -> ContainerClient:
        if "connection_string" in self.options:
            return ContainerClient.from_connection_string(
                self.options["connection_string"], self.container, **_CLIENT_OPTIONS)
        return ContainerClient(self.options["account_url"], self.container,
                               credential=self.options.get("credential"), **_CLIENT_OPTIONS)

    def check(self) -> None:
        try:
            with self._container_client() as client:
                exists = client.exists()
        except (AzureError, ValueError) as error:
            raise ConfigError(f"{self.where}: cannot reach container {self.container!r}: "
                              f"{error}") from None
        if not exists:
            raise ConfigError(f"{self.where}.container: container {self.container!r} "
                              f"does not exist")

    def open(self) -> None:
        self._client = self._container_client()

    def put(self, name: str, body: bytes, content_type: str) -> None:
        if self._client is None:
            self.open()
        self._client.upload_blob(name, body, overwrite=True,
                                 content_settings=ContentSettings(content_type=content_type))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
