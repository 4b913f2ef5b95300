"""The boto3 client options the AWS sinks (`s3`, `kinesis`) share.

Keys: `region`, `endpoint_url` (moto, MinIO, LocalStack), and the optional
pair `access_key_id` + `secret_access_key`; without them boto3's usual
credential chain (environment, profile, instance role) applies.

Clients connect within 5 s, wait at most 15 s for an answer and make one retry of
their own (botocore's defaults: 60 s each and up to 4 retries, minutes per call
against an unreachable endpoint); the ingest bridges use them so. A sink's writes
(`WRITE_CONFIG`) make no retry of their own, so a write ends within about
`WRITE_TIMEOUT_S`, and at once when the endpoint refuses connections: Deliver retries
the batch on its timer, while a retry inside the call (botocore's backoff, about 1-3 s
per write against a stopped endpoint) would hold the bundle's other applications.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fleetstream.schemas.errors import ConfigError

AWS_OPTIONS = frozenset({"region", "endpoint_url", "access_key_id", "secret_access_key"})
#: bounded calls (see the module docstring)
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=15,
                       retries={"max_attempts": 2, "mode": "standard"})
WRITE_CONFIG = CLIENT_CONFIG.merge(Config(retries={"max_attempts": 1, "mode": "standard"}))


def check_credential_pair(where: str, options: Mapping[str, Any]) -> None:
    """Refuse one of access_key_id / secret_access_key without the other."""
    given = {"access_key_id", "secret_access_key"} & set(options)
    if len(given) == 1:
        missing = ({"access_key_id", "secret_access_key"} - given).pop()
        raise ConfigError(f"{where}.{missing}: needed together with {given.pop()}")


def aws_client(service: str, options: Mapping[str, Any], config: Config = CLIENT_CONFIG) -> Any:
    """A boto3 client for `service` configured from a sink's options."""
    return boto3.client(service, region_name=options.get("region"),
                        endpoint_url=options.get("endpoint_url"),
                        aws_access_key_id=options.get("access_key_id"),
                        aws_secret_access_key=options.get("secret_access_key"),
                        config=config)


def check_exists(where: str, key: str, name: str, probe: Callable[[], Any]) -> None:
    """Run `probe`, an AWS call that fails unless `key` `name` exists; say why it failed."""
    try:
        probe()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "?")
        raise ConfigError(f"{where}.{key}: {key} {name!r} does not exist or is not "
                          f"accessible ({code})") from None
    except BotoCoreError as error:
        raise ConfigError(f"{where}: cannot reach AWS for {key} {name!r}: {error}") from None
