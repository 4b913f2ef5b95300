"""Apache Kafka 4 as one KRaft node (broker and controller) on 127.0.0.1.

The jars come from Maven (`org.apache.kafka:kafka_2.13`); on first start the
storage is formatted (`kafka.tools.StorageTool format`, what `kafka-storage.sh
format` runs) with a fresh cluster id. Partition data lives in
`$FLEETSTREAM_HOME/data/kafka/log-dirs/`, the server's own log in
`$FLEETSTREAM_HOME/logs/kafka.log`. Being a development broker, it keeps
records for a day (LOCAL_RETENTION_HOURS; Kafka's default is a week), and rolls
segments hourly so that the old ones can go: test runs, which make topics of
their own, no longer pile up gigabytes.

    from fleetstream.dev.kafka import Kafka
    kafka = Kafka(); kafka.start(); print(kafka.bootstrap)   # 127.0.0.1:9092
"""
from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from pathlib import Path

from fleetstream.dev.java import jar_bundle, java_command
from fleetstream.dev.service import Service, ServiceError, port_open
from fleetstream.runtime import versions

#: how long the local broker keeps records
LOCAL_RETENTION_HOURS = 24
#: the topic that `Kafka.ready` writes one record to
READY_TOPIC = "__fleetstream_ready"

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""


class Kafka(Service):
    """A single-node KRaft Kafka: broker on `port`, controller on `controller_port`."""

    name = "kafka"
    #: a clean shutdown of a broker with thousands of partitions (a long test run makes
    #: them) takes tens of seconds; a KILLed one recovers every partition at its next start
    stop_timeout_s = 90.0

    def __init__(self, port: int = 9092, controller_port: int = 9093,
                 root: Path | None = None) -> None:
        super().__init__(port, root)
        self.controller_port = controller_port
        self._lib: Path | None = None

    @property
    def start_timeout_s(self) -> float:  # type: ignore[override]
        """90 s, and a second more per 100 partitions the broker has to load."""
        try:
            partitions = sum(1 for _ in (self.data_dir / "log-dirs").iterdir())
        except OSError:
            partitions = 0
        return 90.0 + partitions / 100

    @property
    def bootstrap(self) -> str:
        """The `bootstrap.servers` value for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def lib(self) -> Path:
        if self._lib is None:
            self._lib = jar_bundle(f"kafka-{versions.KAFKA}", [
                f"org.apache.kafka:kafka_2.13:{versions.KAFKA}",
                "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
            ])
        return self._lib

    def install(self) -> None:
        self.lib  # noqa: B018 - fetches the jars

    def _java(self, main_class: str, *args: str) -> list[str]:
        return java_command(self.lib, main_class, *args, jvm_options=[
            "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir / 'server-logs'}"])

    @property
    def _properties(self) -> Path:
        return self.data_dir / "server.properties"

    def prepare(self) -> None:
        if port_open(self.controller_port):
            raise ServiceError(f"kafka: controller port {self.controller_port} is already taken; "
                               "stop that process or pass another controller_port")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        log_dirs = self.data_dir / "log-dirs"
        self._properties.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={log_dirs}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "share.coordinator.state.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            f"log.retention.hours={LOCAL_RETENTION_HOURS}",
            "log.roll.hours=1",
        ]) + "\n")
        if not (log_dirs / "meta.properties").exists():
            self._format(log_dirs)

    def _format(self, log_dirs: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                       "-c", str(self._properties), "--ignore-formatted"),
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"kafka: formatting {log_dirs} failed:\n"
                               f"{(result.stdout + result.stderr)[-2000:]}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self._properties))

    def ready(self) -> bool:
        """Serving metadata and acknowledging an idempotent acks=all write.

        Metadata alone is not enough: after a restart the broker answers metadata while
        writes still time out for seconds (it is fenced until it has caught up with the
        metadata log), and a test that ran next saw 503s and missing topics.
        """
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            metadata = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - not serving yet
            return False
        return bool(metadata.brokers) and self._write_acknowledged()

    def _write_acknowledged(self) -> bool:
        """Whether one idempotent, acks=all record to READY_TOPIC is acknowledged within
        3 s. Asked in a child process: in the caller's own, a probe of a broker still
        starting once left a pending exception from librdkafka's callbacks that the next
        unrelated call raised (a SystemError in subprocess, seen in a test's restart)."""
        try:
            done = subprocess.run(
                [sys.executable, "-c", "import sys; from fleetstream.dev.kafka import "
                 "write_acknowledged; sys.exit(0 if write_acknowledged(sys.argv[1]) else 1)",
                 self.bootstrap], capture_output=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0


def write_acknowledged(bootstrap: str) -> bool:
    """Whether the broker at `bootstrap` acknowledges one idempotent, acks=all record to
    READY_TOPIC (created when missing) within 3 s."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from fleetstream.io.kafka.errors import error_code

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.create_topics([NewTopic(READY_TOPIC, 1, 1)], request_timeout=5.0,
                            operation_timeout=5.0)[READY_TOPIC].result()
    except Exception as error:  # noqa: BLE001 - KafkaException
        if error_code(error) != KafkaError.TOPIC_ALREADY_EXISTS:
            return False
    errors: list[object] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": 3000,
                         "log_level": 0})
    producer.produce(READY_TOPIC, b"ready", on_delivery=lambda error, _: errors.append(error))
    producer.flush(5)
    return errors == [None]
