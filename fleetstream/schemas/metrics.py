"""What the job's Beam counters mean for Prometheus (DATA-CONTRACTS §9).

Beam distributions reach Flink's Prometheus reporter as zeros, so the delivery
latency histogram is counted as plain counters, one per bucket: a document whose
latency is at most `LATENCY_BUCKETS_MS[i]` (and above the bound before) adds one
to `app/<id>.latency_le_<bound>`; the recording rules (`fleetstream.monitoring`)
add the buckets up into Prometheus's cumulative `_bucket{le=...}` series.
"""
from __future__ import annotations

import bisect
from typing import Iterable

#: upper bounds of the delivery latency buckets, in milliseconds (+Inf after the last)
LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)
#: counter name suffix of a latency bucket
LATENCY_BUCKET_PREFIX = "latency_le_"
INF_BUCKET = "inf"
#: counter of the latencies' sum, in milliseconds (`_sum` of the histogram)
LATENCY_SUM_MS = "latency_sum_ms"
#: counter scope of dead letters: `dead_letters/<source>.<stage>`
DEAD_LETTER_SCOPE = "dead_letters/"
#: each bucket's counter suffix, by its index in LATENCY_BUCKETS_MS (+Inf last)
_BUCKET_NAMES = tuple(LATENCY_BUCKET_PREFIX + str(bound) for bound in LATENCY_BUCKETS_MS) + (
    LATENCY_BUCKET_PREFIX + INF_BUCKET,)


def latency_bucket(latency_ms: int) -> str:
    """The counter suffix of the bucket that `latency_ms` falls in."""
    return _BUCKET_NAMES[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)]


def latency_counts(now_ms: int, received_ms: Iterable[int]) -> tuple[dict[str, int], int]:
    """How many of the latencies `now_ms - received` (0 for a time ahead of now) fall in each
    bucket (by `latency_bucket`'s suffix; buckets with none left out), and their sum: one
    counter add per bucket, not per document."""
    per_bucket = [0] * len(_BUCKET_NAMES)
    total = 0
    find = bisect.bisect_left
    for received in received_ms:
        latency_ms = now_ms - received if received < now_ms else 0
        per_bucket[find(LATENCY_BUCKETS_MS, latency_ms)] += 1
        total += latency_ms
    return {name: amount for name, amount in zip(_BUCKET_NAMES, per_bucket) if amount}, total
