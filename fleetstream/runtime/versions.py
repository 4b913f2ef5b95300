"""The versions of every local server, chosen together (see docs/runtime.md).

Beam 2.62.0 is the newest release whose Flink runner *and* job service both
resolve through the Maven registry reachable here; the runner is built for
Flink 1.19, so the cluster runs Flink 1.19.x and the SDK workers run the same
apache-beam as the Java job server.

Gap it fills: Beam's Java artifacts of later releases do not resolve through the
Maven registry reachable here, so everything is pinned to what does. TODO: raise
together once a later Beam's Flink runner and job service resolve (then drop the
fixes in `beam_patch` that release contains, apache/beam#27648).
"""
from __future__ import annotations

BEAM = "2.62.0"
FLINK = "1.19.3"
FLINK_MINOR = "1.19"
KAFKA = "4.1.1"
#: the kafka-clients KafkaIO runs with (Beam 2.62 is built against 3.x clients)
KAFKA_CLIENTS_FOR_BEAM = "3.9.1"
