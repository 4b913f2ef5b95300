"""Pub/Sub sink against bare publishing loops on the same emulator, in one run.

    python benchmarks/pubsub_ceiling.py [--documents 10000] [--max-records 1000 10000]
        [--rounds 2]

The sinks bench's documents (`sinks_bench.make_records`: 500 simulated vehicles) cut by
Deliver's batch-job batcher at each `--max-records`, then, alternately, `--rounds` times:

- `mixed`: one raw `Publish` per 1,000 messages of mixed ordering keys (the generated
  client's channel, protobuf messages): what the wire and the emulator take, but Pub/Sub
  refuses it (one ordering key per request), so a ceiling no ordered sink can reach;
- `per vehicle`: the same raw `Publish`, one request per vehicle of the batch, all in
  flight at once (`future`): the floor of what ordering costs a Python publisher;
- `sink`: `PubSubSink.write` (the same requests, plus building and checking them);
- `client`: google-cloud-pubsub's publisher with message ordering (main's sink before this
  change), on the first batches only (it is slow).

Printed per case: documents/s, requests/s and this process's CPU µs per document
(`time.process_time`, every thread), which the machine's load moves least.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sinks_bench import APP, deliver_batches, make_records, pubsub_target  # noqa: E402
from fleetstream.dev.pubsub import PubSubEmulator  # noqa: E402
from fleetstream.io.sinks.pubsub import MAX_MESSAGES_PER_REQUEST, PubSubSink  # noqa: E402
from fleetstream.io.sinks.registry import build_sink  # noqa: E402
from fleetstream.schemas.delivery import Batch  # noqa: E402

#: batches the slow high-level client publishes per pass
CLIENT_BATCHES = 2


def raw_requests(sink: PubSubSink, batch: Batch, per_vehicle: bool) -> list[Any]:
    """The batch's PublishRequests: one per vehicle, or 1,000 messages of any keys each."""
    messages = [sink._message(data=r.document, ordering_key=r.vin,
                              attributes={"application_id": APP, "message_id": r.message_id,
                                          "vin": r.vin}) for r in batch.records]
    if per_vehicle:
        groups: dict[str, list[Any]] = {}
        for message in messages:
            groups.setdefault(message.ordering_key, []).append(message)
        chunks = list(groups.values())
    else:
        chunks = [messages[i:i + MAX_MESSAGES_PER_REQUEST]
                  for i in range(0, len(messages), MAX_MESSAGES_PER_REQUEST)]
    return [sink._request(topic=sink.topic_path, messages=chunk) for chunk in chunks]


def publish_raw(sink: PubSubSink, per_vehicle: bool) -> Callable[[Batch], int]:
    def publish(batch: Batch) -> int:
        calls = [sink._publish.future(request, timeout=20, metadata=sink.routing)
                 for request in raw_requests(sink, batch, per_vehicle)]
        for call in calls:
            call.result()
        return len(calls)
    return publish


def publish_client(sink: PubSubSink) -> Callable[[Batch], int]:
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))

    def publish(batch: Batch) -> int:
        sent = [client.publish(sink.topic_path, r.document, ordering_key=r.vin, application_id=APP,
                               message_id=r.message_id, vin=r.vin) for r in batch.records]
        futures.wait(sent)
        return vehicles(batch)
    return publish


def vehicles(batch: Batch) -> int:
    """The requests a per-vehicle publisher makes of `batch` (each under the limits here)."""
    return len({r.vin for r in batch.records})


def timed(publish: Callable[[Batch], int], batches: Sequence[Batch]) -> tuple[float, float, float]:
    """Documents/s, requests/s and CPU µs per document of publishing `batches`."""
    publish(batches[0])     # warm-up
    started, cpu = time.perf_counter(), time.process_time()
    requests = sum(publish(batch) for batch in batches)
    seconds = time.perf_counter() - started
    documents = sum(len(batch.records) for batch in batches)
    return (documents / seconds, requests / seconds,
            (time.process_time() - cpu) / documents * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--max-records", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    records = make_records(args.documents)
    emulator = PubSubEmulator()
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host    # for google-cloud-pubsub's client
    print("| round | max_records | case | documents/s | requests/s | CPU µs per document |")
    print("|---:|---:|---|---:|---:|---:|")
    for round_number in range(1, args.rounds + 1):
        for max_records in args.max_records:
            options, cleanup = pubsub_target(emulator, f"ceiling-{uuid.uuid4().hex[:10]}",
                                             max_records=max_records)
            sink, batching = build_sink(APP, options)
            assert isinstance(sink, PubSubSink)
            sink.open()
            batches = deliver_batches(records, batching)
            cases = {"mixed": (publish_raw(sink, per_vehicle=False), batches),
                     "per vehicle": (publish_raw(sink, per_vehicle=True), batches),
                     "sink": (lambda batch: sink.write(batch) or vehicles(batch), batches),
                     "client": (publish_client(sink), batches[:CLIENT_BATCHES])}
            try:
                for case, (publish, chosen) in cases.items():
                    per_s, requests_per_s, cpu = timed(publish, chosen)
                    print(f"| {round_number} | {max_records:,} | {case} | {per_s:,.0f} | "
                          f"{requests_per_s:,.0f} | {cpu:.0f} |", flush=True)
            finally:
                sink.close()
                cleanup()


if __name__ == "__main__":
    main()
