"""gRPC push: a client streams raw records and gets one Ack per record once Kafka answered.

    grpc: {listen: 127.0.0.1:8091}          # in ingest.yaml: starts this listener

    channel = grpc.aio.insecure_channel("127.0.0.1:8091")
    push = IngestStub(channel).Push(records, metadata=[("authorization", "Bearer TOKEN")])
    async for ack in push: ...              # Ack(request_id, code, message), in order

`Push` (proto/ingest.proto) takes a stream of `RawRecord{source, vin, payload, request_id}`
and answers each, in the order sent, with `Ack{request_id, code, message}`; the codes are
the HTTP push's (DATA-CONTRACTS §8): 202 only after Kafka acknowledged the record (value =
the payload bytes, key = the VIN, none when empty; timestamp = receive time), 404 unknown
source (or one without `push:`), 401 wrong credentials, 413 payload over
`http.max_body_bytes`, 503 Kafka did not take it in time (resend it later). None but 202
writes anything; one refused record does not end the stream. Records are written while
earlier ones still wait for Kafka (at most MAX_IN_FLIGHT a stream), so a stream goes at
Kafka's pace, not at one round trip a record.

Credentials are the call's metadata, checked against each record's source: `bearer` sources
take `authorization: Bearer <token>` (constant-time compare), `none` sources take anything.
An `hmac-sha256` source is refused (401) over gRPC: metadata is sent once per call, not per
record, so a signature of each payload cannot ride in it, and sending the HMAC secret as a
token would defeat the signature; such a source pushes over HTTP, or is given bearer auth.
A message larger than `max_body_bytes` plus ENVELOPE_BYTES is refused by gRPC itself
(RESOURCE_EXHAUSTED, which ends the call). The listener is plaintext: keep it on loopback or
behind a TLS-terminating proxy.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from typing import AsyncIterator, Sequence

import grpc

from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.proto.ingest_pb2 import Ack, RawRecord
from fleetstream.ingest.proto.ingest_pb2_grpc import IngestServicer, add_IngestServicer_to_server
from fleetstream.ingest.writer import KafkaUnavailable, RawWriter, RecordRefused
from fleetstream.settings.ingest import IngestSettings

VIA = "grpc"
#: records of one stream written but not yet acknowledged to the client
MAX_IN_FLIGHT = 256
#: room for a record's other fields above `max_body_bytes` in gRPC's message size limit
ENVELOPE_BYTES = 16 * 1024
#: how long in-flight streams may finish when the gateway stops
STOP_GRACE_S = 10.0


class PushServicer(IngestServicer):
    """`Ingest.Push`: each record checked, written, and acknowledged in order."""

    def __init__(self, settings: IngestSettings, writer: RawWriter,
                 metrics: IngestMetrics) -> None:
        self.settings, self.writer, self.metrics = settings, writer, metrics

    async def Push(self, request_iterator: AsyncIterator[RawRecord],  # noqa: N802 (gRPC's name)
                   context: grpc.aio.ServicerContext) -> AsyncIterator[Ack]:
        token = _bearer(context.invocation_metadata() or ())
        pending: asyncio.Queue[asyncio.Future[Ack] | None] = asyncio.Queue(MAX_IN_FLIGHT)

        async def read() -> None:
            try:
                async for record in request_iterator:
                    await pending.put(asyncio.ensure_future(self._answer(record, token)))
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await pending.get()) is not None:
                yield await answer
            await reader
        finally:
            reader.cancel()
            while not pending.empty():
                if (answer := pending.get_nowait()) is not None:
                    answer.cancel()

    async def _answer(self, record: RawRecord, token: str | None) -> Ack:
        """Check, write and count one record; its Ack."""
        received_ms = int(time.time() * 1000)
        source = self.settings.sources.get(record.source)
        if source is None or source.push is None:
            return self._ack(record, 404, f"unknown source {record.source!r}", "(unknown)")
        if not _authorized(source.push.type, source.push.secret, token):
            return self._ack(record, 401, "missing or wrong credentials"
                             + (": hmac-sha256 sources push over HTTP"
                                if source.push.type == "hmac-sha256" else ""), source.name)
        limit = self.settings.http.max_body_bytes
        if len(record.payload) > limit:
            return self._ack(record, 413, f"payload of {len(record.payload)} bytes is over "
                                          f"{limit}", source.name)
        try:
            with self.metrics.produce_latency.time():
                await self.writer.write(source.topic, record.payload,
                                        record.vin.encode() or None, received_ms)
        except KafkaUnavailable as error:
            return self._ack(record, 503, f"Kafka unavailable, retry later: {error}",
                             source.name)
        except RecordRefused as error:
            return self._ack(record, 413 if error.too_large else 400, str(error), source.name)
        self.metrics.records.labels(source=source.name, via=VIA).inc()
        return self._ack(record, 202, "", source.name)

    def _ack(self, record: RawRecord, code: int, message: str, source: str) -> Ack:
        self.metrics.requests.labels(source=source, code=str(code)).inc()
        return Ack(request_id=record.request_id, code=code, message=message)


def _bearer(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The token of the call's `authorization: Bearer <token>`, or None."""
    for key, value in metadata:
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


def _authorized(kind: str, secret: bytes, token: str | None) -> bool:
    if kind == "none":
        return True
    if kind != "bearer" or token is None:
        return False
    return hmac.compare_digest(token.encode(), secret)


async def start_grpc(settings: IngestSettings, writer: RawWriter,
                     metrics: IngestMetrics) -> grpc.aio.Server:
    """The gRPC push server of `settings.grpc`, started (listening) and returned."""
    assert settings.grpc is not None, "settings have no grpc: section"
    limit = settings.http.max_body_bytes + ENVELOPE_BYTES
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.so_reuseport", 0)])
    add_IngestServicer_to_server(PushServicer(settings, writer, metrics), server)
    address = f"{settings.grpc.host}:{settings.grpc.port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"gRPC push cannot listen on {address}: {error}") from error
    await server.start()
    return server


async def serve_grpc(settings: IngestSettings, writer: RawWriter, metrics: IngestMetrics,
                     stop: asyncio.Event) -> None:
    """Serve gRPC push until `stop` is set; streams in flight get STOP_GRACE_S to finish."""
    server = await start_grpc(settings, writer, metrics)
    try:
        await stop.wait()
    finally:
        await server.stop(STOP_GRACE_S)
