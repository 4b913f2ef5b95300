"""AzureBlobSink against a real Azurite."""
from __future__ import annotations

import uuid

import pytest
from azure.storage.blob import ContainerClient

from fleetstream.dev.azurite import ACCOUNT_KEY
from fleetstream.io.sinks.object.azure_blob import AzureBlobSink
from fleetstream.io.sinks.registry import build_sink
from fleetstream.schemas.errors import ConfigError

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]


@pytest.fixture
def container(azurite_service):
    client = ContainerClient.from_connection_string(
        azurite_service.connection_string, f"fleetstream-{uuid.uuid4().hex[:12]}")
    client.create_container()
    yield client
    client.delete_container()
    client.close()


def test_writes_blobs_idempotently_in_each_format(azurite_service, container, check_object_sink):
    def stored():
        return {b.name: container.download_blob(b.name).readall()
                for b in container.list_blobs()}

    options = {"connection_string": azurite_service.connection_string,
               "container": container.container_name}
    check_object_sink(lambda extra: AzureBlobSink("fleet-a", {**options, **extra}), stored)


def test_account_url_with_key_credential(azurite_service, container, make_batch):
    sink = AzureBlobSink("fleet-a", {"account_url": azurite_service.account_url,
                                     "credential": ACCOUNT_KEY,
                                     "container": container.container_name})
    sink.check()
    sink.write(make_batch())
    sink.close()
    assert len(list(container.list_blobs())) == 1


def test_check_refuses_a_missing_container(azurite_service):
    sink = AzureBlobSink("fleet-a", {"connection_string": azurite_service.connection_string,
                                     "container": "no-such-container"})
    with pytest.raises(ConfigError, match=r"\.container: container 'no-such-container' "
                                          r"does not exist"):
        sink.check()


@pytest.mark.parametrize("options, message", [
    ({"type": "azure_blob", "connection_string": "x"}, r": sink type 'azure_blob' needs container"),
    ({"type": "azure_blob", "container": "c-1"}, r": give exactly one of connection_string and account_url"),
    ({"type": "azure_blob", "container": "c-1", "connection_string": "x", "account_url": "y"},
     r": give exactly one of"),
    ({"type": "azure_blob", "container": "c-1", "connection_string": "x", "credential": "k"},
     r"\.credential: only used with account_url"),
    ({"type": "azure_blob", "container": "c-1", "connection_string": "x", "bucket": "b"},
     r": unknown key\(s\) bucket"),
])
def test_config_errors_name_the_key(options, message):
    with pytest.raises(ConfigError, match=r"^applications\[fleet-a\]\.sink" + message):
        build_sink("fleet-a", options)
