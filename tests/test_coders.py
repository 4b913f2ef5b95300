"""The product's coders: what crosses a shuffle comes back equal, and sizing is cheap and close."""
from __future__ import annotations

from apache_beam import coders

from fleetstream.schemas.delivery import Batch, Record
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.settings.config import parse_config
from fleetstream.transforms.coders import BatchCoder, decode_messages, encode_messages
from fleetstream.transforms.permissions import application_rules, prepare_data


def _batch(n: int) -> Batch:
    records = [Record(f"VIN{i:014d}", f"{i:032x}", 1_700_000_000_000 + i,
                      b'{"version":1,"data":{"x":' + str(i).encode() + b"}}", i) for i in range(n)]
    return Batch("fleet", "b" * 24, records)


def test_a_batch_round_trips_through_its_registered_coder() -> None:
    coder = coders.registry.get_coder(Batch)
    assert isinstance(coder, BatchCoder)
    batch = _batch(1_000)
    decoded = coder.decode(coder.encode(batch))
    assert decoded == (batch.application_id, batch.batch_id, batch.records)
    assert all(isinstance(r, Record) for r in decoded.records)
    assert decoded.jsonl() == batch.jsonl()


def test_a_batch_is_sized_close_to_its_encoding_without_encoding_it() -> None:
    coder = BatchCoder()
    for n in (1, 100, 5_000):
        batch = _batch(n)
        encoded = len(coder.encode(batch))
        assert 0.5 * encoded <= coder.estimate_size(batch) <= 2 * encoded


def test_a_message_with_prepared_data_round_trips() -> None:
    config = parse_config({"applications": [
        {"id": "fleet", "permissions": ["diagnostics.*"], "sink": {"type": "file", "path": "x"}},
        {"id": "insurer", "permissions": ["charging.*"], "sink": {"type": "file", "path": "x"}}]})
    data = {"diagnostics": {"odometer": [{"data": 1, "timestamp": "t"}]}}
    message = MappedMessage("tesla", "s", 1, 2, prepare_data(data, application_rules(
        config.applications)))
    assert message.data[1] is None
    coder = coders.registry.get_coder(MappedMessage)
    assert coder.decode(coder.encode(message)) == message


def test_a_run_of_messages_round_trips_as_one_byte_string() -> None:
    """What a replay's ordering shuffles per vehicle: prepared and plain data, lateness,
    and None for an application that may see nothing, each message equal and a MappedMessage."""
    prepared = MappedMessage("bmw", "a" * 32, 1, 5, (b'{"doors":{}}', None), True)
    plain = MappedMessage("tesla", "b" * 32, 2, 3,
                          {"diagnostics": {"odometer": [{"data": 1.5, "timestamp": "t"}]}})
    decoded = decode_messages(encode_messages([prepared, plain]))
    assert decoded == [prepared, plain]
    assert all(type(m) is MappedMessage for m in decoded)
    assert decoded[0].late and not decoded[1].late
    assert decode_messages(encode_messages([])) == []
