"""The operator views of a running FleetStream: `fleetstream status` and `fleetstream dashboard`.

Both read what Prometheus has (DATA-CONTRACTS §9 metrics) and what Flink says of its jobs;
neither writes anything. The package stands beside the pipeline: only the command line
imports it, and it imports no Beam.

* `prometheus`: a small client of Prometheus' HTTP API (instant and range queries, alerts)
* `flink`: the job states from Flink's REST API
* `queries`: the named PromQL queries both views show, defined once
* `status`: the terminal view (rich)
* `dashboard`: the web page and the process that serves it (aiohttp, vendored uPlot)
"""
