"""The PromQL behind `fleetstream status` and `fleetstream dashboard`, defined once.

Each `Query` has a name (the dashboard's API asks for queries by this name and by nothing
else), the PromQL over the DATA-CONTRACTS §9 metrics (and the exporter's consumer lag in
seconds, docs/operations.md), the labels that tell its series apart
and the unit its values are in. Rates are per second over `RATE_WINDOW`; latency
percentiles over `LATENCY_WINDOW`.

    for query in QUERIES.values():
        print(query.name, query.promql)
    QUERIES["consumer_lag"].series_name({"topic": "raw.tesla"})   # "raw.tesla"
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

#: the window of every rate (at least four of the integrator's 15 s scrapes)
RATE_WINDOW = "1m"
#: the window of the latency percentiles
LATENCY_WINDOW = "5m"


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    promql: str
    #: the labels that tell the series apart, in the order they are shown
    by: tuple[str, ...]
    #: "per_s", "ratio" (0..1), "seconds" or "records"
    unit: str

    def series_name(self, labels: Mapping[str, str]) -> str:
        """The series' label values joined with " / " ("tesla / failed")."""
        return " / ".join(labels.get(label, "") for label in self.by) or self.title

    def key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(label, "") for label in self.by)


def _rate(metric: str, by: str, selector: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{selector}[{RATE_WINDOW}]))"


def _latency(quantile: float) -> str:
    return (f"histogram_quantile({quantile}, sum by (application, le) "
            f"(rate(fleetstream_delivery_latency_seconds_bucket[{LATENCY_WINDOW}])))")


_READ = '{outcome="read"}'
_FAILED = '{outcome=~"failed|partial"}'

_QUERIES = (
    Query("source_outcomes", "Messages per source and outcome",
          _rate("fleetstream_messages_total", "source, outcome"), ("source", "outcome"),
          "per_s"),
    Query("source_throughput", "Messages read per source",
          _rate("fleetstream_messages_total", "source", _READ), ("source",),
          "per_s"),
    Query("source_failure_share", "Failed and partial share of the messages read per source",
          # a source with reads but no failed or partial series yet shows 0, not nothing
          f'({_rate("fleetstream_messages_total", "source", _FAILED)} or '
          f'{_rate("fleetstream_messages_total", "source", _READ)} * 0)'
          f' / {_rate("fleetstream_messages_total", "source", _READ)}',
          ("source",), "ratio"),
    Query("application_delivered", "Documents delivered per application",
          _rate("fleetstream_documents_delivered_total", "application"), ("application",),
          "per_s"),
    Query("application_retries", "Delivery retries per application",
          _rate("fleetstream_delivery_retries_total", "application"), ("application",),
          "per_s"),
    Query("dead_letters", "Dead letters per source and stage",
          _rate("fleetstream_dead_letters_total", "source, stage"), ("source", "stage"),
          "per_s"),
    Query("consumer_lag", "Consumer lag per topic",
          "sum by (topic) (fleetstream_consumer_lag_records)", ("topic",), "records"),
    # not a §9 name: `fleetstream exporter`'s, which the FleetStreamConsumerLag alert watches
    Query("consumer_lag_seconds", "Consumer lag per topic in time",
          "max by (topic) (fleetstream_consumer_lag_seconds)", ("topic",), "seconds"),
    Query("latency_p50", "Delivery latency p50 per application", _latency(0.5),
          ("application",), "seconds"),
    Query("latency_p99", "Delivery latency p99 per application", _latency(0.99),
          ("application",), "seconds"),
    Query("ingest_requests", "Ingest push requests per source and code",
          _rate("fleetstream_ingest_requests_total", "source, code"), ("source", "code"),
          "per_s"),
)

#: name -> query, in the order the views show them
QUERIES: Mapping[str, Query] = {query.name: query for query in _QUERIES}
