"""The ingest gateway (`fleetstream ingest --config ingest.yaml`, DATA-CONTRACTS §8).

Raw OEM data in, untouched, to one raw Kafka topic per source: signed HTTP pushes,
bridges from brokers and queues (`bridges/`), and a poller for OEMs that only offer a
REST API. Every way in writes through `writer.RawWriter` and acknowledges its sender only
after Kafka did; `metrics.IngestMetrics` counts it (§9). Nothing here parses more than a
record's key needs. It sits beside the pipeline: it imports schemas, settings and io,
and only the command line imports it.
"""
