"""The gateway's Prometheus metrics (DATA-CONTRACTS §9), one registry per process.

    metrics = IngestMetrics()
    metrics.requests.labels(source="smartcar", code="202").inc()
    metrics.records.labels(source="smartcar", via="push").inc()
    with metrics.produce_latency.time(): await writer.write(...)
    body = metrics.exposition()         # GET /metrics
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: the ways a record comes in (the `via` label)
VIAS = ("push", "grpc", "mqtt", "amqp", "sqs", "kinesis", "pubsub", "kafka", "poll")


class IngestMetrics:
    """The §9 ingest metrics and the gateway's own, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("fleetstream_ingest_requests", "push requests answered",
                                ["source", "code"], registry=self.registry)
        self.records = Counter("fleetstream_ingest_records", "raw records written to Kafka",
                               ["source", "via"], registry=self.registry)
        self.dead_letters = Counter("fleetstream_ingest_dead_letters",
                                    "records sent to the dead-letter topic instead",
                                    ["source", "via"], registry=self.registry)
        self.produce_latency = Histogram(
            "fleetstream_ingest_produce_latency_seconds",
            "from handing a record to the producer to the broker's acknowledgement",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.bridge_lag = Gauge("fleetstream_ingest_bridge_lag_messages",
                                "messages waiting at the source, where it says",
                                ["source", "via"], registry=self.registry)
        self.bridge_lag_seconds = Gauge("fleetstream_ingest_bridge_lag_seconds",
                                        "how far behind the newest source message a bridge "
                                        "reads, where the source says (Kinesis)",
                                        ["source", "via"], registry=self.registry)
        self.poll_calls = Counter("fleetstream_ingest_poll_calls", "OEM API calls by outcome",
                                  ["source", "outcome"], registry=self.registry)
        self.poll_changes = Counter("fleetstream_ingest_poll_changes",
                                    "polled vehicle states that changed (and were written)",
                                    ["source"], registry=self.registry)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
