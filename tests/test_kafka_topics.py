"""The Kafka edges of the streaming job: records to envelopes and activation events, bad ones to dead letters."""
from __future__ import annotations

from typing import NamedTuple

import orjson

from fleetstream.io.kafka.producer import READ_MARK_KEY
from fleetstream.io.kafka.transforms import _ParseActivationFn, _ToEnvelopeFn
from fleetstream.schemas.activations import ActivationEvent
from fleetstream.schemas.envelope import RawEnvelope


class KafkaRow(NamedTuple):
    """The fields of KafkaIO's record-with-metadata that the job reads."""

    topic: str
    value: bytes
    timestamp: int
    key: bytes | None = None


def run(fn, row: KafkaRow) -> list:
    outputs = list(fn.process(row))
    fn.finish_bundle()
    return outputs


def test_raw_records_become_envelopes_named_by_their_topic() -> None:
    fn = _ToEnvelopeFn({"raw.tesla": "tesla"})
    [envelope] = run(fn, KafkaRow("raw.tesla", b'{"vin": "V"}', 1_772_352_930_500))
    assert envelope == RawEnvelope("tesla", 1_772_352_930_500, b'{"vin": "V"}')


def test_a_record_from_an_unknown_topic_is_a_dead_letter_with_its_payload() -> None:
    [tagged] = run(_ToEnvelopeFn({"raw.tesla": "tesla"}), KafkaRow("raw.volvo", b"\xff\x00", 5))
    letter = tagged.value
    assert tagged.tag == "invalid" and letter["stage"] == "ingest"
    assert "raw.volvo" in letter["errors"][0]["reason"]
    assert letter["payload_b64"] == "/wA="          # not UTF-8: kept whole as base64


def test_a_poll_becomes_one_list_of_envelopes_and_a_dead_letter_per_unknown_topic() -> None:
    from fleetstream.io.kafka.transforms import _PollToEnvelopesFn

    fn = _PollToEnvelopesFn({"raw.tesla": "tesla", "raw.bmw": "bmw"})
    outputs = list(fn.process([("raw.tesla", 1, b"a"), ("raw.volvo", 2, b"b"),
                               ("raw.bmw", 3, b"c")]))
    fn.finish_bundle()
    [tagged, envelopes] = outputs
    assert tagged.tag == "invalid" and "raw.volvo" in tagged.value["errors"][0]["reason"]
    assert envelopes == [RawEnvelope("tesla", 1, b"a"), RawEnvelope("bmw", 3, b"c")]
    [only] = fn.process([("raw.volvo", 2, b"b")])          # and no empty list
    assert only.tag == "invalid"


def test_activation_events_are_parsed_and_bad_ones_dead_lettered() -> None:
    good = orjson.dumps({"vin": "V", "application_id": "a", "status": "revoked",
                         "at": "2026-03-01T08:00:00Z"})
    [event] = run(_ParseActivationFn(), KafkaRow("activations", good, 1))
    assert event == ActivationEvent("V", "a", "revoked", 1_772_352_000_000)
    for bad, reason in ((b"not json", "invalid activation event"),
                        (b'{"vin": "V", "application_id": "a", "status": "approved"}',
                         "`at` is not a timestamp"),
                        (b"[1, 2]", "JSON object")):
        [tagged] = run(_ParseActivationFn(), KafkaRow("activations", bad, 1))
        assert tagged.tag == "invalid" and reason in tagged.value["errors"][0]["reason"]
        assert tagged.value["payload"] == bad.decode()


def test_a_read_mark_on_the_activations_topic_is_neither_an_event_nor_a_dead_letter() -> None:
    assert run(_ParseActivationFn(), KafkaRow("activations", b"", 1, READ_MARK_KEY)) == []
    [tagged] = run(_ParseActivationFn(), KafkaRow("activations", b"", 1, b"V/a"))
    assert tagged.tag == "invalid"        # an empty value under any other key is invalid


def test_a_write_the_broker_does_not_acknowledge_fails_the_bundle() -> None:
    import pytest
    from confluent_kafka import KafkaException

    from fleetstream.io.kafka.transforms import _ProduceFn

    for batches, element, count in ((False, ("V", {"n": 1}), 1),
                                    (True, [("V", {"n": 1}), ("W", b"{}")], 2)):
        fn = _ProduceFn("127.0.0.1:1", "dead-letters", None, batches,    # nothing there
                        flush_timeout_s=1.0)
        fn.setup()
        fn.process(element)
        with pytest.raises(KafkaException,
                           match=f"{count} record\\(s\\) not written to 'dead-letters'"):
            fn.finish_bundle()
        fn.teardown()


def test_a_tombstone_on_the_activations_topic_is_neither_an_event_nor_a_dead_letter() -> None:
    assert run(_ParseActivationFn(), KafkaRow("activations", None, 1, b"V/a")) == []


def test_an_approval_dated_from_the_future_is_a_dead_letter_a_revocation_is_applied() -> None:
    written = 1_772_352_000_000                          # 2026-03-01T08:00:00Z
    approval = orjson.dumps({"vin": "V", "application_id": "a", "status": "approved",
                             "at": "2026-03-01T08:05:01Z"})
    [tagged] = run(_ParseActivationFn(), KafkaRow("activations", approval, written, b"V/a"))
    assert tagged.tag == "invalid"
    assert "approval dated 2026-03-01T08:05:01.000Z, more than 300 s after it was written" \
        in tagged.value["errors"][0]["reason"]
    on_time = orjson.dumps({"vin": "V", "application_id": "a", "status": "approved",
                            "at": "2026-03-01T08:05:00Z"})
    assert run(_ParseActivationFn(), KafkaRow("activations", on_time, written, b"V/a")) == [
        ActivationEvent("V", "a", "approved", written + 300_000)]
    revocation = orjson.dumps({"vin": "V", "application_id": "a", "status": "revoked",
                               "at": "2030-01-01T00:00:00Z"})
    [event] = run(_ParseActivationFn(), KafkaRow("activations", revocation, written, b"V/a"))
    assert event.status == "revoked"
