"""KinesisSink: each document as one record of an Amazon Kinesis data stream.

Configuration (`sink:` of an application)::

    sink:
      type: kinesis
      stream: fleet-a-telemetry          # required: the stream name
      region: eu-central-1               # optional; else the AWS configuration
      endpoint_url: http://127.0.0.1:5000   # optional: moto, LocalStack
      access_key_id: ...                 # optional pair; else the AWS credential chain
      secret_access_key: ...
      concurrency: 4                     # optional: PutRecords calls in flight at once (1-64)

The partition key is the VIN, so one vehicle's documents land on one shard in
order. A batch is sent with PutRecords in calls of at most 500 records and
5 MiB (data plus partition keys). A batch of more than one call's records is
split into up to `concurrency` lanes of whole vehicles (balanced by record
count), sent at once, one thread each; a lane sends its calls one after
another, so a vehicle's records go out in order, in one call or in calls that
follow each other. (One call at a time measured 126 ms per 500 records
against moto, whose server is the limit there; against Kinesis a call is
network-bound, and lanes overlap them.)

Records that Kinesis refuses in a call (`FailedRecordCount` > 0, e.g.
throttling) are sent again after a backoff with jitter, up to
`MAX_RESENDS` times, without reordering a vehicle: from a vehicle's first
refused record on, all its later records of the batch are held back (its lane
sends none of them in its later calls) and resent in order, so none is
written after the refusal until the refused one is in. (Kinesis may already
have accepted a later record that was in the same call as the refused one; it
is then written again after it, with the same `message_id`, so the newest copy
of every document is in order.) When records are still refused after the last
resend, `write` raises `KinesisPartialFailure` and Deliver retries the whole
batch. A call that fails (connection, timeout) fails the write once every
other lane's call is over, so no call of a failed write is still in flight
when Deliver retries the batch.

A document whose record is larger than 1 MiB can never be written: `write`
raises `RecordTooLarge` (a `PermanentWriteError`) before sending anything, and
Deliver sends the batch straight to the delivery dead letters.
"""
from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Mapping, NamedTuple, Sequence

from botocore.config import Config

from fleetstream.io.sinks.aws import (AWS_OPTIONS, WRITE_CONFIG, aws_client,
                                      check_credential_pair, check_exists)
from fleetstream.io.sinks.base import Sink
from fleetstream.schemas.delivery import Batch, Batching, Record
from fleetstream.schemas.errors import ConfigError, PermanentWriteError

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 << 20
MAX_RECORD_BYTES = 1 << 20
DEFAULT_CONCURRENCY, MAX_CONCURRENCY = 4, 64


class RecordTooLarge(PermanentWriteError, ValueError):
    """A document exceeds Kinesis' 1 MiB record limit: retrying cannot help."""


class KinesisPartialFailure(RuntimeError):
    """Kinesis still refused some records after every resend."""


class _Entry(NamedTuple):
    vin: str
    request: dict[str, Any]   # one PutRecords request entry
    size: int                 # data plus partition key, as Kinesis counts it


class KinesisSink(Sink):
    """Documents as Kinesis records, partitioned by VIN."""

    TYPE = "kinesis"
    #: one full call per lane at the default concurrency
    DEFAULT_BATCHING = Batching(max_records=DEFAULT_CONCURRENCY * MAX_RECORDS_PER_CALL,
                                max_bytes=DEFAULT_CONCURRENCY * MAX_BYTES_PER_CALL,
                                max_delay_s=1.0)
    REQUIRED = frozenset({"stream"})
    OPTIONAL = AWS_OPTIONS | {"concurrency"}
    #: resends of refused records within one write, and the first backoff;
    #: each later backoff doubles, each is scaled by a random 0.5-1.0
    MAX_RESENDS = 5
    RESEND_DELAY_S = 0.1

    def __init__(self, application_id: str, options: Mapping[str, Any],
                 client: Any = None) -> None:
        """`client` replaces the boto3 Kinesis client (tests)."""
        super().__init__(application_id, options)
        self.where = f"applications[{application_id}].sink"
        self.stream = options["stream"]
        if not isinstance(self.stream, str) or not self.stream:
            raise ConfigError(f"{self.where}.stream: expected a stream name, got {self.stream!r}")
        check_credential_pair(self.where, options)
        self.concurrency = options.get("concurrency", DEFAULT_CONCURRENCY)
        if (not isinstance(self.concurrency, int) or isinstance(self.concurrency, bool)
                or not 1 <= self.concurrency <= MAX_CONCURRENCY):
            raise ConfigError(f"{self.where}.concurrency: expected a whole number of PutRecords "
                              f"calls in flight, 1-{MAX_CONCURRENCY}; got {self.concurrency!r}")
        self._client = client
        self._lanes: ThreadPoolExecutor | None = None

    def check(self) -> None:
        check_exists(self.where, "stream", self.stream, lambda: aws_client(
            "kinesis", self.options).describe_stream_summary(StreamName=self.stream))

    def open(self) -> None:
        if self._client is None:
            self._client = aws_client("kinesis", self.options, WRITE_CONFIG.merge(
                Config(max_pool_connections=max(10, self.concurrency))))
        if self._lanes is None and self.concurrency > 1:
            self._lanes = ThreadPoolExecutor(self.concurrency,
                                             thread_name_prefix=f"kinesis-{self.stream}")

    def write(self, batch: Batch) -> None:
        self.open()
        pending = [_entry(record) for record in batch.records]
        for resend in range(self.MAX_RESENDS + 1):
            pending, errors = self._send_lanes(pending)
            if not pending:
                return
            if resend < self.MAX_RESENDS:
                time.sleep(self.RESEND_DELAY_S * 2 ** resend * random.uniform(0.5, 1.0))
        raise KinesisPartialFailure(
            f"kinesis stream {self.stream!r}: {len(pending)} record(s) of batch "
            f"{batch.batch_id} still refused after {self.MAX_RESENDS} resends: "
            + ", ".join(f"{code} x{count}" for code, count in errors.items()))

    def _send_lanes(self, pending: Sequence[_Entry]) -> tuple[list[_Entry], Counter[str]]:
        """Send `pending` in lanes of whole vehicles at once; return what must be sent
        again (each vehicle's in order) and why."""
        lanes = _lanes(pending, min(self.concurrency, -(-len(pending) // MAX_RECORDS_PER_CALL)))
        if len(lanes) == 1 or self._lanes is None:
            rounds = [self._send_round(lane) for lane in lanes]
        else:
            sent = [self._lanes.submit(self._send_round, lane) for lane in lanes]
            wait(sent)   # every call is over before a failed one raises (and Deliver retries)
            rounds = [lane.result() for lane in sent]
        errors: Counter[str] = Counter()
        for _, lane_errors in rounds:
            errors.update(lane_errors)
        return [entry for again, _ in rounds for entry in again], errors

    def _send_round(self, pending: Sequence[_Entry]) -> tuple[list[_Entry], Counter[str]]:
        """Send `pending` in calls one after another; return what must be sent again, in
        order, and why.

        A vehicle's records after its first refused one are held back (not sent
        in later calls of this round) and returned with it.
        """
        first_refused: dict[str, int] = {}
        errors: Counter[str] = Counter()
        position = 0
        while position < len(pending):
            call: list[int] = []
            call_bytes = 0
            while position < len(pending) and len(call) < MAX_RECORDS_PER_CALL:
                entry = pending[position]
                if entry.vin not in first_refused:
                    if call and call_bytes + entry.size > MAX_BYTES_PER_CALL:
                        break
                    call.append(position)
                    call_bytes += entry.size
                position += 1
            if not call:
                break
            response = self._client.put_records(
                StreamName=self.stream, Records=[pending[i].request for i in call])
            if not response.get("FailedRecordCount"):
                continue
            for index, result in zip(call, response["Records"]):
                if "ErrorCode" in result:
                    first_refused.setdefault(pending[index].vin, index)
                    errors[result["ErrorCode"]] += 1
        again = [entry for index, entry in enumerate(pending)
                 if index >= first_refused.get(entry.vin, len(pending))]
        return again, errors

    def close(self) -> None:
        if self._lanes is not None:
            self._lanes.shutdown()
            self._lanes = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _lanes(entries: Sequence[_Entry], count: int) -> list[list[_Entry]]:
    """`entries` in at most `count` lanes, each vehicle's in one lane in their order; the
    vehicles with most records are placed first, each in the lane with fewest records."""
    per_vehicle: dict[str, int] = Counter(entry.vin for entry in entries)
    if count <= 1 or len(per_vehicle) == 1:
        return [list(entries)]
    loads = [(0, lane) for lane in range(count)]
    lane_of: dict[str, int] = {}
    for vin, records in sorted(per_vehicle.items(), key=lambda item: -item[1]):
        load, lane = heapq.heappop(loads)
        lane_of[vin] = lane
        heapq.heappush(loads, (load + records, lane))
    lanes: list[list[_Entry]] = [[] for _ in range(count)]
    for entry in entries:
        lanes[lane_of[entry.vin]].append(entry)
    return [lane for lane in lanes if lane]


def _entry(record: Record) -> _Entry:
    size = len(record.document) + len(record.vin.encode())
    if size > MAX_RECORD_BYTES:
        raise RecordTooLarge(
            f"document {record.message_id} of vehicle {record.vin} is {size} bytes as a "
            f"Kinesis record; the limit is {MAX_RECORD_BYTES} bytes")
    return _Entry(record.vin, {"Data": record.document, "PartitionKey": record.vin}, size)
