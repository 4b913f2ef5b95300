"""SqsBridge: an Amazon SQS queue into the source's raw topic.

    sources:
      ford:
        sqs:
          queue_url: https://sqs.eu-central-1.amazonaws.com/123456789012/ford-telemetry
          region: eu-central-1           # optional; else the AWS configuration
          endpoint_url: http://127.0.0.1:5000   # optional: moto, LocalStack
          vin_attribute: vin             # the key: this String message attribute, when present
          wait_time_s: 10                # long-poll wait of one receive, 1-20 (default 10)

Credentials come from boto3's usual chain (environment, profile, instance role). The
bridge long-polls up to 10 messages at a time, writes them to Kafka, and deletes (in
one DeleteMessageBatch call) only those whose write returned. A message not deleted
becomes visible again after the queue's visibility timeout and is received again: keep
that timeout well above Kafka's write timeout. The queue's ApproximateNumberOfMessages
is the `bridge_lag` gauge, read every `LAG_EVERY_S`.

The record's value is the message body's bytes (UTF-8, as SQS keeps text). Poison: a
message over `max_message_bytes`, or whose `vin_attribute` is not a String attribute,
goes to the dead letters and is deleted.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from fleetstream.ingest.bridges.base import Bridge, wait_for_stop
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.io.sinks.aws import aws_client

log = logging.getLogger(__name__)

LAG_EVERY_S = 10.0
#: pause after a failed receive before the next
RECEIVE_RETRY_S = 2.0


class SqsBridge(Bridge):
    """One SQS queue, each message deleted after Kafka's ack."""

    KIND = "sqs"
    REQUIRED = frozenset({"queue_url"})
    OPTIONAL = frozenset({"region", "endpoint_url", "vin_attribute", "wait_time_s"})

    def __init__(self, source: str, topic: str, options: Mapping[str, Any], where: str) -> None:
        super().__init__(source, topic, options, where)
        self.queue_url = self.option("queue_url", str)
        self.option("region", str)
        self.option("endpoint_url", str)
        self.vin_attribute = self.option("vin_attribute", str)
        self.wait_time_s = self.option("wait_time_s", int, 10, choices=range(1, 21))

    def key_of(self, message: Mapping[str, Any]) -> bytes | None:
        """The VIN attribute (None when not configured or absent); ValueError when not a String."""
        if self.vin_attribute is None:
            return None
        attribute = message.get("MessageAttributes", {}).get(self.vin_attribute)
        if attribute is None:
            return None
        if attribute.get("DataType", "").split(".")[0] != "String" or not attribute.get(
                "StringValue"):
            raise ValueError(f"message attribute {self.vin_attribute!r} (vin_attribute) is "
                             f"{attribute.get('DataType')}, not a String VIN")
        return attribute["StringValue"].encode()

    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        client = aws_client("sqs", self.options)
        lag = metrics.bridge_lag.labels(source=self.source, via=self.KIND)
        lag_at = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() - lag_at > LAG_EVERY_S:
                    lag_at = time.monotonic()
                    lag.set(await asyncio.to_thread(self._waiting, client))
                try:
                    messages = (await asyncio.to_thread(
                        client.receive_message, QueueUrl=self.queue_url,
                        MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_time_s,
                        MessageAttributeNames=[self.vin_attribute or "All"],
                    )).get("Messages", [])
                except (BotoCoreError, ClientError) as error:
                    log.warning("%s: receive failed: %s", self.where, error)
                    await wait_for_stop(stop, RECEIVE_RETRY_S)
                    continue
                written = await asyncio.gather(*(self._forward(writer, metrics, message, stop)
                                                 for message in messages))
                done = [message for message, ok in zip(messages, written) if ok]
                if done:
                    await asyncio.to_thread(self._delete, client, done)
        finally:
            client.close()

    async def _forward(self, writer: RawWriter, metrics: IngestMetrics,
                       message: Mapping[str, Any], stop: asyncio.Event) -> bool:
        try:
            key, poison = self.key_of(message), None
        except ValueError as error:
            key, poison = None, str(error)
        return await self.forward(writer, metrics, message["Body"].encode(), key, stop, poison)

    def _delete(self, client: Any, messages: list[Mapping[str, Any]]) -> None:
        try:
            failed = client.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(messages)]).get("Failed", [])
        except (BotoCoreError, ClientError) as error:
            failed = [{"Message": str(error)}]
        if failed:   # they come again after their visibility timeout: a duplicate, not a loss
            log.warning("%s: %d message(s) written but not deleted: %s", self.where,
                        len(failed), failed[0].get("Message"))

    def _waiting(self, client: Any) -> float:
        try:
            return float(client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"])
        except (BotoCoreError, ClientError, KeyError, ValueError):
            return float("nan")
