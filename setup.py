"""FleetStream: vehicle data from car makers to the applications that use it, on Apache Beam."""
from pathlib import Path

from setuptools import find_packages, setup

# apache-beam is pinned to the newest version whose Java artifacts (Flink job
# server, Kafka expansion service) resolve through Maven here: see docs/runtime.md.
INSTALL_REQUIRES = [
    "apache-beam[gcp,aws]==2.62.0",
    "orjson==3.13.0",
    "fastavro==1.13.1",
    "PyYAML==6.0.3",
    "paho-mqtt==2.2.0",
    "boto3==1.43.11",
    "azure-storage-blob==12.31.1",
    "confluent-kafka==2.16.1",
    "aiohttp==3.14.5",             # the ingest gateway's HTTP server (fleetstream ingest)
    "prometheus-client==0.26.0",   # /metrics of FleetStream's own processes
    "aio-pika==10.2.1",            # the ingest gateway's AMQP (RabbitMQ) bridge
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "hypothesis==6.170.15",
    "moto[server]==5.2.1",   # a local S3 and Kinesis for tests and `fleetstream dev`
    "import-linter==2.16",   # the import contracts in .importlinter (tests/test_layers.py)
    "pytest-randomly==5.1.0",  # every run in a new order: tests must not lean on each other
]

setup(
    name="fleetstream",
    version="0.1.0",
    description=__doc__,
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    if Path(__file__).with_name("README.md").exists() else __doc__,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["fleetstream", "fleetstream.*"]),
    package_data={"fleetstream": ["schemas/*.avsc"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["fleetstream = fleetstream.pipelines.cli:main"]},
)
