"""PubSubSink: each document as one Google Pub/Sub message, in order per vehicle.

Configuration (`sink:` of an application)::

    sink:
      type: pubsub
      project: fleet-a-prod              # required: the customer's project id
      topic: fleetstream-telemetry       # required: the topic id (it exists already)
      emulator_host: 127.0.0.1:8085      # optional: a local emulator, plaintext, no credentials

Without `emulator_host` the client uses Google's default credentials (or
`PUBSUB_EMULATOR_HOST` when set). Beam's own Pub/Sub IO does not run on the
portable Flink runner (https://github.com/apache/beam/issues/27443), so the sink
publishes with `google-cloud-pubsub`'s publisher client.

Each message: data = the document JSON, attributes `application_id`,
`message_id` and `vin`, ordering key = the VIN, on a publisher with message
ordering on, so a subscription with ordering enabled receives a vehicle's
documents in order. The client's batches are sized by the application's knobs
(`max_records` -> `max_messages`, at most 1,000; `max_bytes` -> `max_bytes`, at
most 10 MB; `max_delay` -> `max_latency`); it keeps one batch per ordering key,
so a `write` waits about `max_delay` for the last ones.

`write` publishes every record of the batch and waits for every publish future.
Each publish request is tried once, within `PUBLISH_TIMEOUT_S` (the client's own
retries go on for up to 60 s against an unreachable server, holding the bundle's
other applications): Deliver retries the batch on its timer. When one fails, the client pauses that ordering key (later publishes on it fail
at once); `write` resumes each failed key (`resume_publish`) and then raises
`PubSubDeliveryError`, so Deliver's retry can publish the batch again; a
document may then arrive twice, with the same `message_id`. A document over
Pub/Sub's 10 MB message limit raises `MessageTooLarge` (a `PermanentWriteError`)
before anything is published. `check()` refuses a topic that does not exist.
"""
from __future__ import annotations

from concurrent import futures
from typing import Any, Mapping

from google.api_core import exceptions as google_errors

from fleetstream.io.sinks.base import WRITE_TIMEOUT_S, Sink
from fleetstream.schemas.delivery import Batch, Batching
from fleetstream.schemas.errors import ConfigError, PermanentWriteError

#: Pub/Sub's limits: messages and bytes per publish request, bytes per message
MAX_MESSAGES_PER_REQUEST = 1000
MAX_BYTES_PER_REQUEST = 10_000_000
MAX_MESSAGE_BYTES = 10_000_000
#: how long `write` waits for a batch's publishes (one write must not hold the
#: bundle's other applications for long; `base.WRITE_TIMEOUT_S`), and `check` for the topic
PUBLISH_TIMEOUT_S = WRITE_TIMEOUT_S
CHECK_TIMEOUT_S = 10.0


class PubSubDeliveryError(ConnectionError):
    """Some messages of a batch were not published."""


class MessageTooLarge(PermanentWriteError, ValueError):
    """A document exceeds Pub/Sub's 10 MB message limit: retrying cannot help."""


class PubSubSink(Sink):
    """Documents as Pub/Sub messages with the VIN as ordering key."""

    TYPE = "pubsub"
    DEFAULT_BATCHING = Batching(max_records=1000, max_bytes=9 << 20, max_delay_s=0.05)
    REQUIRED = frozenset({"project", "topic"})
    OPTIONAL = frozenset({"emulator_host"})

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        self.where = f"applications[{application_id}].sink"
        for key in ("project", "topic"):
            if not isinstance(options[key], str) or not options[key] or "/" in options[key]:
                raise ConfigError(f"{self.where}.{key}: expected a Pub/Sub {key} id, got "
                                  f"{options[key]!r}")
        self.topic_path = f"projects/{options['project']}/topics/{options['topic']}"
        host = options.get("emulator_host")
        if host is not None and (not isinstance(host, str) or ":" not in host):
            raise ConfigError(f"{self.where}.emulator_host: expected HOST:PORT, got {host!r}")
        self.emulator_host: str | None = host
        self._client: Any = None

    def client(self) -> Any:
        """A PublisherClient with ordering on and batches sized by `batching`."""
        from google.cloud import pubsub_v1

        settings = pubsub_v1.types.BatchSettings(
            max_messages=min(self.batching.max_records, MAX_MESSAGES_PER_REQUEST),
            max_bytes=min(self.batching.max_bytes, MAX_BYTES_PER_REQUEST),
            max_latency=self.batching.max_delay_s)
        ordering = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        if self.emulator_host is None:
            return pubsub_v1.PublisherClient(settings, ordering)
        import grpc
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
        transport = PublisherGrpcTransport(channel=grpc.insecure_channel(self.emulator_host))
        return pubsub_v1.PublisherClient(settings, ordering, transport=transport)

    def check(self) -> None:
        client = self.client()
        try:
            client.get_topic(topic=self.topic_path, timeout=CHECK_TIMEOUT_S)
        except google_errors.NotFound:
            raise ConfigError(f"{self.where}.topic: topic {self.topic_path!r} does not exist; "
                              f"create it first") from None
        except google_errors.GoogleAPICallError as error:
            raise ConfigError(f"{self.where}.topic: cannot read topic {self.topic_path!r}: "
                              f"{error.message}") from None
        finally:
            client.transport.close()

    def open(self) -> None:
        if self._client is None:
            self._client = self.client()

    def write(self, batch: Batch) -> None:
        self.open()
        for record in batch.records:
            if len(record.document) > MAX_MESSAGE_BYTES:
                raise MessageTooLarge(
                    f"document {record.message_id} of vehicle {record.vin} is "
                    f"{len(record.document)} bytes; Pub/Sub's limit is {MAX_MESSAGE_BYTES}")
        sent = {self._client.publish(self.topic_path, record.document, ordering_key=record.vin,
                                     retry=None, timeout=PUBLISH_TIMEOUT_S,
                                     application_id=batch.application_id,
                                     message_id=record.message_id, vin=record.vin): record.vin
                for record in batch.records}
        done, late = futures.wait(sent, timeout=PUBLISH_TIMEOUT_S)
        failed = {sent[future]: future.exception() for future in done if future.exception()}
        if not failed and not late:
            return
        for vin in failed:
            self._client.resume_publish(self.topic_path, vin)
        first = next(iter(failed.values()), None)
        raise PubSubDeliveryError(
            f"pubsub topic {self.topic_path!r}: {len(late)} message(s) of batch "
            f"{batch.batch_id} not published within {PUBLISH_TIMEOUT_S:g} s, and "
            f"{len(failed)} vehicle(s) failed; first error: {first!r}")

    def close(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client.transport.close()
            self._client = None
