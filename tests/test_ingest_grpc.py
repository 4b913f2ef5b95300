"""gRPC push against the real local Kafka: one Ack per record, 202 only once Kafka has it."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, Iterator, Sequence

import grpc
import pytest
from confluent_kafka import Consumer, TopicPartition

from fleetstream.dev.kafka import Kafka
from fleetstream.ingest.grpc_push import ENVELOPE_BYTES, start_grpc
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.proto.ingest_pb2 import Ack, RawRecord
from fleetstream.ingest.proto.ingest_pb2_grpc import IngestStub
from fleetstream.ingest.service import serve
from fleetstream.ingest.writer import RawWriter
from fleetstream.schemas.errors import ConfigError
from fleetstream.settings.ingest import GrpcSettings, IngestSettings, parse_ingest_settings
from tests.helpers import free_port, read_topic

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

TOKEN = "s3cret-token"
MAX_BODY = 4096


def gateway_settings(bootstrap: str, topic: str, port: int) -> IngestSettings:
    return parse_ingest_settings({
        "kafka": {"bootstrap": bootstrap},
        "http": {"listen": f"127.0.0.1:{free_port()}", "max_body_bytes": MAX_BODY},
        "grpc": {"listen": f"127.0.0.1:{port}"},
        "sources": {"mercedes": {"topic": topic,
                                 "push": {"auth": {"type": "bearer", "token_env": "T"}}},
                    "smartcar": {"topic": topic, "push": {"auth": {
                        "type": "hmac-sha256", "secret_env": "T"}}}}},
        environ={"T": TOKEN})


def records(count: int, source: str = "mercedes", size: int = 40) -> list[RawRecord]:
    return [RawRecord(source=source, vin=f"VIN{i:05d}", request_id=f"r{i}",
                      payload=(f'{{"i": {i}, "pad": "' + "x" * size + '"}').encode())
            for i in range(count)]


def records_in(bootstrap: str, topic: str) -> int:
    """How many records the topic holds (the sum of its partitions' high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in partitions)
    finally:
        consumer.close()


async def push(settings: IngestSettings, writer: RawWriter, sent: Sequence[RawRecord],
               metadata: Sequence[tuple[str, str]] = (("authorization", f"Bearer {TOKEN}"),),
               on_ack: Any = None, metrics: IngestMetrics | None = None) -> list[Ack]:
    """Stream `sent` to a gateway started for this call; the Acks it answered."""
    server = await start_grpc(settings, writer, metrics or IngestMetrics())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc.port}") as channel:
            call = IngestStub(channel).Push(iter(sent), metadata=tuple(metadata))
            acks = []
            async for ack in call:
                if on_ack is not None:
                    on_ack(ack, len(acks))
                acks.append(ack)
            return acks
    finally:
        await server.stop(1)


@pytest.fixture
def topic() -> str:
    return f"test.grpc.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def writer(kafka_service: Kafka, topic: str) -> Iterator[RawWriter]:
    raw_writer = RawWriter(kafka_service.bootstrap)
    raw_writer.ensure_topics([topic])
    yield raw_writer
    raw_writer.close()


def test_each_record_is_acked_202_only_once_kafka_has_it(kafka_service: Kafka, topic: str,
                                                         writer: RawWriter) -> None:
    settings = gateway_settings(kafka_service.bootstrap, topic, free_port())
    sent = records(50)
    metrics = IngestMetrics()

    def in_kafka_before_its_ack(ack: Ack, index: int) -> None:
        if ack.code == 202:
            assert records_in(kafka_service.bootstrap, topic) >= index + 1

    acks = asyncio.run(push(settings, writer, sent, on_ack=in_kafka_before_its_ack,
                            metrics=metrics))
    assert [(a.request_id, a.code) for a in acks] == [(r.request_id, 202) for r in sent]
    got = read_topic(kafka_service.bootstrap, topic, len(sent))
    assert sorted((m.key(), m.value()) for m in got) == sorted(
        (r.vin.encode(), r.payload) for r in sent)
    assert metrics.records.labels(source="mercedes", via="grpc")._value.get() == len(sent)


def test_bad_token_unknown_source_and_oversize_are_refused_and_not_written(
        kafka_service: Kafka, topic: str, writer: RawWriter) -> None:
    settings = gateway_settings(kafka_service.bootstrap, topic, free_port())
    wrong = asyncio.run(push(settings, writer, records(3),
                             metadata=[("authorization", "Bearer nope")]))
    missing = asyncio.run(push(settings, writer, records(1), metadata=[]))
    hmac_source = asyncio.run(push(settings, writer, records(1, source="smartcar")))
    mixed = asyncio.run(push(settings, writer, [
        RawRecord(source="volvo", vin="V", payload=b"{}", request_id="unknown"),
        RawRecord(source="mercedes", vin="V", payload=b"x" * (MAX_BODY + 1),
                  request_id="too-big"),
        RawRecord(source="mercedes", vin="V", payload=b"x" * MAX_BODY, request_id="fits")]))
    assert [a.code for a in wrong] == [401, 401, 401]
    assert [a.code for a in missing + hmac_source] == [401, 401]
    assert "HTTP" in hmac_source[0].message
    assert [(a.request_id, a.code) for a in mixed] == [
        ("unknown", 404), ("too-big", 413), ("fits", 202)]
    got = read_topic(kafka_service.bootstrap, topic, 1)
    assert [m.value() for m in got] == [b"x" * MAX_BODY]


def test_a_message_far_over_the_limit_ends_the_call(kafka_service: Kafka, topic: str,
                                                    writer: RawWriter) -> None:
    settings = gateway_settings(kafka_service.bootstrap, topic, free_port())
    huge = RawRecord(source="mercedes", payload=b"x" * (MAX_BODY + ENVELOPE_BYTES + 1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(push(settings, writer, [huge]))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_kafka_unavailable_is_503_for_each_record() -> None:
    settings = gateway_settings("127.0.0.1:1", "raw.nowhere", free_port())
    writer = RawWriter("127.0.0.1:1", timeout_s=1.0)
    try:
        acks = asyncio.run(push(settings, writer, records(3)))
    finally:
        writer.close(1)
    assert [(a.request_id, a.code) for a in acks] == [("r0", 503), ("r1", 503), ("r2", 503)]
    assert all("retry" in a.message for a in acks)


def test_the_gateway_serves_grpc_when_the_settings_have_a_grpc_section(
        kafka_service: Kafka, topic: str) -> None:
    # `serve` starts the HTTP listener too for push: sources (fleetstream/ingest/http.py,
    # written on another branch): until both are merged there is nothing to serve them
    pytest.importorskip("fleetstream.ingest.http")
    settings = gateway_settings(kafka_service.bootstrap, topic, free_port())
    settings = IngestSettings(settings.bootstrap_servers, settings.http,
                              {"mercedes": settings.sources["mercedes"]}, settings.grpc)

    async def scenario() -> list[Ack]:
        stop = asyncio.Event()
        gateway = asyncio.create_task(serve(settings, stop))
        try:
            for _ in range(100):
                try:
                    async with grpc.aio.insecure_channel(
                            f"127.0.0.1:{settings.grpc.port}") as channel:
                        await asyncio.wait_for(channel.channel_ready(), 0.2)
                        call = IngestStub(channel).Push(
                            iter(records(2)), metadata=(("authorization", f"Bearer {TOKEN}"),))
                        return [ack async for ack in call]
                except asyncio.TimeoutError:
                    assert not gateway.done(), gateway.exception()
            raise AssertionError("the gRPC listener never came up")
        finally:
            stop.set()
            await gateway

    assert [a.code for a in asyncio.run(scenario())] == [202, 202]


@pytest.mark.parametrize(("grpc_section", "error"), [
    ({"listen": "8091"}, r"grpc.listen: expected HOST:PORT"),
    ({"listen": "127.0.0.1:0"}, r"grpc.listen: expected HOST:PORT"),
    ({"port": 8091}, r"grpc"),
])
def test_a_wrong_grpc_section_is_refused_naming_the_key(grpc_section: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_ingest_settings({"grpc": grpc_section, "sources": {"mercedes": {"push": {
            "auth": {"type": "none"}}}}})


def test_without_a_grpc_section_there_is_no_grpc_listener() -> None:
    settings = parse_ingest_settings({"sources": {"m": {"push": {"auth": {"type": "none"}}}}})
    assert settings.grpc is None
    assert parse_ingest_settings({"grpc": {}, "sources": {"m": {"push": {"auth": {
        "type": "none"}}}}}).grpc == GrpcSettings("127.0.0.1", 8091)
