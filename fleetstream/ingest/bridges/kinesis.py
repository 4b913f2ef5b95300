"""KinesisBridge: an Amazon Kinesis data stream into the source's raw topic.

    sources:
      volvo:
        kinesis:
          stream: volvo-telemetry
          region: eu-west-1              # optional; else the AWS configuration
          endpoint_url: http://127.0.0.1:5000   # optional: moto, LocalStack
          start: latest                  # where a shard without a checkpoint starts: latest
                                         # (default) or trim_horizon (the oldest record kept)
          checkpoint_file: /var/lib/fleetstream/kinesis-volvo.json   # default below

Credentials come from boto3's usual chain. One reader per shard (the shards listed at
start): GetRecords from its shard iterator, every record written to Kafka with the
record's partition key as the key, then the shard's checkpoint (the sequence number of
the last record written, all before it written too) saved. Checkpoints are kept in a
small local JSON file (`{shard id: sequence number}`, replaced atomically), by
default `kinesis-<source>-<stream>.checkpoints.json` in the working directory; a shard
with a checkpoint resumes AFTER_SEQUENCE_NUMBER it, so a restart reads again at most
the records written after the last save, never skips one. Only one gateway may read a
stream with one checkpoint file.

`MillisBehindLatest` of the last GetRecords is the `bridge_lag_seconds` gauge (the
largest over the shards). Poison: a record over `max_message_bytes` goes to the dead
letters and is checkpointed past.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from fleetstream.ingest.bridges.base import Bridge, wait_for_stop, written_prefix
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.io.sinks.aws import aws_client

log = logging.getLogger(__name__)

#: records of one GetRecords call, and the pause when a shard had none (Kinesis allows 5 calls/s)
RECORDS_PER_CALL = 1000
IDLE_S = 1.0
ERROR_RETRY_S = 2.0
STARTS = {"latest": "LATEST", "trim_horizon": "TRIM_HORIZON"}


class KinesisBridge(Bridge):
    """Every shard of one stream, checkpointed after Kafka's ack."""

    KIND = "kinesis"
    REQUIRED = frozenset({"stream"})
    OPTIONAL = frozenset({"region", "endpoint_url", "start", "checkpoint_file"})

    def __init__(self, source: str, topic: str, options: Mapping[str, Any], where: str) -> None:
        super().__init__(source, topic, options, where)
        self.stream = self.option("stream", str)
        self.option("region", str)
        self.option("endpoint_url", str)
        self.start = STARTS[self.option("start", str, "latest", choices=tuple(STARTS))]
        self.checkpoint_file = Path(self.option(
            "checkpoint_file", str, f"kinesis-{source}-{self.stream}.checkpoints.json"))
        self._checkpoints: dict[str, str] = {}
        self._behind_ms: dict[str, float] = {}

    def checkpoints(self) -> dict[str, str]:
        """The saved checkpoints: shard id -> the sequence number of its last record written."""
        try:
            return dict(json.loads(self.checkpoint_file.read_text()))
        except FileNotFoundError:
            return {}

    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        client = aws_client("kinesis", self.options)
        self._checkpoints = self.checkpoints()
        try:
            shards = await asyncio.to_thread(self._shards, client)
            await asyncio.gather(*(self._read_shard(client, shard, writer, metrics, stop)
                                   for shard in shards))
        finally:
            client.close()

    def _shards(self, client: Any) -> list[str]:
        shards, token = [], None
        while True:
            page = (client.list_shards(NextToken=token) if token
                    else client.list_shards(StreamName=self.stream))
            shards += [shard["ShardId"] for shard in page["Shards"]]
            token = page.get("NextToken")
            if not token:
                return shards

    def _iterator(self, client: Any, shard: str) -> str:
        after = self._checkpoints.get(shard)
        start = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
                 if after else {"ShardIteratorType": self.start})
        return client.get_shard_iterator(StreamName=self.stream, ShardId=shard,
                                         **start)["ShardIterator"]

    async def _read_shard(self, client: Any, shard: str, writer: RawWriter,
                          metrics: IngestMetrics, stop: asyncio.Event) -> None:
        iterator: str | None = None
        lag = metrics.bridge_lag_seconds.labels(source=self.source, via=self.KIND)
        while not stop.is_set():
            try:
                if iterator is None:
                    iterator = await asyncio.to_thread(self._iterator, client, shard)
                page = await asyncio.to_thread(client.get_records, ShardIterator=iterator,
                                               Limit=RECORDS_PER_CALL)
            except (BotoCoreError, ClientError) as error:
                # ExpiredIteratorException included: a new iterator from the checkpoint
                log.warning("%s: shard %s: %s", self.where, shard, error)
                iterator = None
                await wait_for_stop(stop, ERROR_RETRY_S)
                continue
            records = page["Records"]
            self._behind_ms[shard] = float(page.get("MillisBehindLatest", 0))
            lag.set(max(self._behind_ms.values()) / 1000)
            written = await asyncio.gather(*(
                self.forward(writer, metrics, record["Data"],
                             record.get("PartitionKey", "").encode() or None, stop)
                for record in records))
            count = written_prefix(written)
            if count:
                self._save(shard, records[count - 1]["SequenceNumber"])
            if count < len(records):
                return   # stopped while Kafka was away: the rest is read again next time
            iterator = page.get("NextShardIterator")
            if iterator is None:
                log.info("%s: shard %s is closed and read to its end", self.where, shard)
                return
            if not records:
                await wait_for_stop(stop, IDLE_S)

    def _save(self, shard: str, sequence_number: str) -> None:
        self._checkpoints[shard] = sequence_number
        self.checkpoint_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.checkpoint_file.with_name(self.checkpoint_file.name + ".partial")
        partial.write_text(json.dumps(self._checkpoints, indent=1, sort_keys=True))
        os.replace(partial, self.checkpoint_file)
