"""PubSubSink: each document as one Google Pub/Sub message, in order per vehicle.

Configuration (`sink:` of an application)::

    sink:
      type: pubsub
      project: fleet-a-prod              # required: the customer's project id
      topic: fleetstream-telemetry       # required: the topic id (it exists already)
      emulator_host: 127.0.0.1:8085      # optional: a local emulator, plaintext, no credentials

Without `emulator_host` the sink uses Google's default credentials (or
`PUBSUB_EMULATOR_HOST` when set). Beam's own Pub/Sub IO does not run on the
portable Flink runner (https://github.com/apache/beam/issues/27443), so the sink
calls Pub/Sub's `Publish` RPC itself, over the channel of `google-cloud-pubsub`'s
generated client (`google.pubsub_v1`), with plain protobuf messages.

Each message: data = the document JSON, attributes `application_id`,
`message_id` and `vin`, ordering key = the vehicle id the application sees (the
VIN or its pseudonym), so a subscription with message ordering on receives a
vehicle's documents in order.

What Pub/Sub guarantees, and what the sink relies on:

- All messages of one `PublishRequest` must carry the same ordering key (the
  `PubsubMessage.ordering_key` reference,
  https://cloud.google.com/pubsub/docs/reference/rpc/google.pubsub.v1#pubsubmessage;
  the service refuses a mixed request with FAILED_PRECONDITION "In a single publish
  request, all messages must have no ordering key or they must all have the same
  ordering key", as quoted in https://github.com/yoshidan/google-cloud-rust/issues/226).
  So a write sends one request per vehicle of the batch, at least.
- Messages with the same ordering key, published in one region, are delivered to an
  ordered subscription in the order the service received them; across keys there
  is no order (https://cloud.google.com/pubsub/docs/ordering). A request's messages
  are received in their list order (Google's clients batch a key's messages so); two
  requests of one key in flight at once may be received in either order, so Google's
  clients send a key's next batch only once the previous one was acknowledged, and
  fail the key's queued messages when it failed
  (https://github.com/googleapis/google-cloud-cpp/issues/4803).

A write therefore groups the batch by ordering key, in order, and cuts each key's
messages into requests of at most `MAX_MESSAGES_PER_REQUEST` messages and
`MAX_BYTES_PER_REQUEST` bytes (`publish_rounds`). Round after round, it sends the
round's requests (one per key, their key sets disjoint) all at once on one channel
and waits for every answer; a key's next request goes out only after its previous
one was acknowledged, and not at all once that one failed. A write starts only
after the previous one returned, so one key never has two requests in flight.

Each request is tried once (no client retry), all within `PUBLISH_TIMEOUT_S` of the
write's start: Deliver retries the batch on its timer. When a request fails, `write`
raises `PubSubDeliveryError` naming how many vehicles failed; Deliver's retry
publishes the whole batch again, so a document may arrive twice, with the same
`message_id`, each copy in order after the last. A message that cannot fit in one
request (a document near Pub/Sub's 10 MB limit) raises `MessageTooLarge` (a
`PermanentWriteError`) before anything is published. `check()` refuses a topic that
does not exist.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from google.api_core import exceptions as google_errors

from fleetstream.io.sinks.base import WRITE_TIMEOUT_S, Sink
from fleetstream.schemas.delivery import Batch, Batching
from fleetstream.schemas.errors import ConfigError, PermanentWriteError

#: Pub/Sub's limits: messages and bytes per publish request
MAX_MESSAGES_PER_REQUEST = 1000
MAX_BYTES_PER_REQUEST = 10_000_000
#: a message's framing inside a PublishRequest, at most (field tag and length)
FRAMING_BYTES = 6
#: how long `write` waits for a batch's publishes (one write must not hold the
#: bundle's other applications for long; `base.WRITE_TIMEOUT_S`), and `check` for the topic
PUBLISH_TIMEOUT_S = WRITE_TIMEOUT_S
CHECK_TIMEOUT_S = 10.0
PUBLISH_METHOD = "/google.pubsub.v1.Publisher/Publish"


class PubSubDeliveryError(ConnectionError):
    """Some messages of a batch were not published."""


class MessageTooLarge(PermanentWriteError, ValueError):
    """A document does not fit in one publish request: retrying cannot help."""


def publish_rounds(messages: Iterable[Any], max_bytes: int) -> list[list[list[Any]]]:
    """`messages` (protobuf PubsubMessages, in order) as rounds of publish requests.

    A request holds one ordering key's messages in order, at most
    MAX_MESSAGES_PER_REQUEST of them and `max_bytes` with their framing; a round holds
    at most one request per key, and a key's next request is in the next round.
    MessageTooLarge if a message alone exceeds `max_bytes`.
    """
    per_key: dict[str, list[list[Any]]] = {}
    filled: dict[str, int] = {}
    for message in messages:
        key, size = message.ordering_key, message.ByteSize() + FRAMING_BYTES
        if size > max_bytes:
            raise MessageTooLarge(
                f"document {message.attributes['message_id']} of vehicle {key} is "
                f"{len(message.data)} bytes; a Pub/Sub publish request holds at most "
                f"{MAX_BYTES_PER_REQUEST} bytes")
        requests = per_key.setdefault(key, [[]])
        if requests[-1] and (len(requests[-1]) == MAX_MESSAGES_PER_REQUEST
                             or filled[key] + size > max_bytes):
            requests.append([])
            filled[key] = 0
        requests[-1].append(message)
        filled[key] = filled.get(key, 0) + size
    depth = max(map(len, per_key.values()), default=0)
    return [[requests[index] for requests in per_key.values() if index < len(requests)]
            for index in range(depth)]


class PubSubSink(Sink):
    """Documents as Pub/Sub messages with the vehicle id as ordering key."""

    TYPE = "pubsub"
    #: a write costs about one request per vehicle in it, so the more documents per vehicle
    #: a batch holds the fewer requests per document (10,000: about 20 per vehicle in the
    #: sinks bench); streaming batches are cut by `max_delay` long before that
    DEFAULT_BATCHING = Batching(max_records=10_000, max_bytes=9 << 20, max_delay_s=0.05)
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
        #: what one request may hold besides its topic
        self.request_budget = MAX_BYTES_PER_REQUEST - len(self.topic_path) - FRAMING_BYTES
        #: the routing header the generated client sends with every call
        self.routing = (("x-goog-request-params", f"topic={quote(self.topic_path, safe='')}"),)
        self._client: Any = None
        self._publish: Any = None
        self._message: Any = None
        self._request: Any = None

    def client(self) -> Any:
        """The generated Publisher client: on the emulator, or with default credentials."""
        from google import pubsub_v1

        host = self.emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST")
        if host is None:
            return pubsub_v1.PublisherClient()
        import grpc
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
        return pubsub_v1.PublisherClient(
            transport=PublisherGrpcTransport(channel=grpc.insecure_channel(host)))

    def check(self) -> None:
        client = self.client()
        try:
            client.get_topic(topic=self.topic_path, retry=None, timeout=CHECK_TIMEOUT_S)
        except google_errors.NotFound:
            raise ConfigError(f"{self.where}.topic: topic {self.topic_path!r} does not exist; "
                              f"create it first") from None
        except google_errors.GoogleAPICallError as error:
            raise ConfigError(f"{self.where}.topic: cannot read topic {self.topic_path!r}: "
                              f"{error.message}") from None
        finally:
            client.transport.close()

    def open(self) -> None:
        """The client, and a raw `Publish` callable on its channel (protobuf in and out,
        none of the generated client's per-call wrapping)."""
        if self._client is not None:
            return
        from google.pubsub_v1.types import pubsub as types

        self._message, self._request = types.PubsubMessage.pb(), types.PublishRequest.pb()
        self._client = self.client()
        self._publish = self._client.transport.grpc_channel.unary_unary(
            PUBLISH_METHOD, request_serializer=self._request.SerializeToString,
            response_deserializer=types.PublishResponse.pb().FromString)

    def write(self, batch: Batch) -> None:
        self.open()
        rounds = publish_rounds(
            (self._message(data=record.document, ordering_key=record.vin,
                           attributes={"application_id": batch.application_id,
                                       "message_id": record.message_id, "vin": record.vin})
             for record in batch.records), self.request_budget)
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        failed: dict[str, Exception] = {}
        late = 0
        for requests in rounds:
            timeout = max(0.0, deadline - time.monotonic())
            calls = [(request, self._publish.future(
                        self._request(topic=self.topic_path, messages=request),
                        timeout=timeout, metadata=self.routing))
                     for request in requests if request[0].ordering_key not in failed]
            for request, call in calls:
                if (rpc_error := call.exception()) is not None:
                    error = google_errors.from_grpc_error(rpc_error)
                    failed[request[0].ordering_key] = error
                    if isinstance(error, google_errors.DeadlineExceeded):
                        late += len(request)
        if failed:
            raise PubSubDeliveryError(
                f"pubsub topic {self.topic_path!r}: {late} message(s) of batch "
                f"{batch.batch_id} not published within {PUBLISH_TIMEOUT_S:g} s, and "
                f"{len(failed)} vehicle(s) failed; first error: {next(iter(failed.values()))!r}")

    def close(self) -> None:
        if self._client is not None:
            self._client.transport.close()
            self._client = self._publish = None
