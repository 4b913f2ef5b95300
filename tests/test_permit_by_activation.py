"""PermitByActivation: only approved vehicles, only permitted properties, newest activation wins."""
from __future__ import annotations

import apache_beam as beam
import orjson
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from fleetstream.schemas.activations import ActivationEvent
from fleetstream.schemas.document import message_id
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.settings.config import parse_config
from fleetstream.transforms.activations import (approved_table, decode_table, encode_table,
                                                newest_activations)
from fleetstream.transforms.permissions import permitted_data
from fleetstream.transforms.permit_by_activation import (ActivationTable, KnownActivationTable,
                                                         PermitByActivation)

ENTRY = [{"data": 1, "timestamp": "t"}]
DATA = {"diagnostics": {"odometer": ENTRY, "speed": ENTRY},
        "charging": {"battery_level": ENTRY, "status": ENTRY},
        "vehicle_location": {"coordinates": ENTRY}}


def test_permitted_data_keeps_only_permitted_properties() -> None:
    permitted = {"diagnostics": frozenset({"odometer"}),
                 "charging": frozenset({"battery_level", "status", "charge_limit"})}
    assert permitted_data(DATA, permitted) == {
        "diagnostics": {"odometer": ENTRY},
        "charging": {"battery_level": ENTRY, "status": ENTRY}}
    assert permitted_data(DATA, {"doors": frozenset({"locks_state"})}) == {}


def test_documents_from_prepared_data_are_the_documents_from_the_data() -> None:
    """The keyed step's documents (data prepared per application before the shuffle) are
    byte for byte those of PermitByActivation, with the same counts."""
    from fleetstream.transforms.permissions import application_rules, documents, prepare_data

    applications = application_rules(CONFIG.applications)
    ids = [a.id for a in CONFIG.applications]
    for message in (_message("m", DATA), _message("m", DATA)._replace(late=True),
                    _message("m", {"doors": {"locks_state": ENTRY}})):
        prepared = message._replace(data=prepare_data(message.data, applications))
        for approved in (set(ids), {ids[0]}, set()):
            counts, prepared_counts = _Counts(), _Counts()
            assert list(documents("V", prepared, approved, applications,
                                           prepared_counts)) \
                == list(documents("V", message, approved, applications, counts))
            assert prepared_counts.seen == counts.seen
            # prepared for the approved applications only (a batch job's table is fixed)
            only_approved = message._replace(data=prepare_data(message.data, applications,
                                                                approved))
            assert list(documents("V", only_approved, approved, applications,
                                           _Counts())) \
                == list(documents("V", message, approved, applications, _Counts()))
    assert len(list(documents("V", _message("m", DATA), set(ids), applications, _Counts()))) == 2


class _Counts:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def add(self, name: str, n: int = 1) -> None:
        self.seen.append(name)


def event(vin: str, app: str, status: str, at: int) -> ActivationEvent:
    return ActivationEvent(vin, app, status, at)


def test_newest_event_wins_and_only_approved_counts() -> None:
    events = [event("V1", "a", "approved", 1), event("V1", "a", "revoked", 2),
              event("V2", "a", "revoked", 1), event("V2", "a", "approved", 2),
              event("V3", "a", "pending", 5), event("V4", "a", "approved", 3),
              event("V4", "b", "approved", 3), event("V5", "a", "weird-status", 9),
              # a tie: the restrictive status wins
              event("V6", "a", "approved", 4), event("V6", "a", "revoked", 4)]
    assert approved_table(newest_activations(events)) == {
        "V2": frozenset({"a"}), "V4": frozenset({"a", "b"})}
    # Order of arrival does not matter.
    assert approved_table(newest_activations(reversed(events))) == \
        approved_table(newest_activations(events))
    # The encoded table a batch job carries is the table.
    table = approved_table(newest_activations(events))
    assert decode_table(encode_table(table)) == table
    assert decode_table(encode_table({})) == {}


CONFIG = parse_config({"applications": [
    {"id": "fleet", "permissions": ["diagnostics.*", "charging.battery_level"],
     "sink": {"type": "file", "path": "unused"}},
    {"id": "insurer", "permissions": ["diagnostics.odometer"],
     "sink": {"type": "file", "path": "unused"}},
]})


def _message(smid: str, data: dict) -> MappedMessage:
    return MappedMessage("tesla", smid, 1, 1, data)


@pytest.mark.parametrize("shape", ["per message", "batch job"])
def test_permission_isolation_in_a_pipeline(shape: str) -> None:
    """The same documents per message with the side-input table built in the job, and in a
    batch job's shape: the table built before the job (`KnownActivationTable`), the data
    prepared as JSON per application, each vehicle's messages as one list."""
    events = [
        event("APPROVED", "fleet", "approved", 1), event("APPROVED", "insurer", "approved", 1),
        event("PENDING", "fleet", "pending", 1),
        event("REVOKED", "fleet", "approved", 1), event("REVOKED", "fleet", "revoked", 2),
        event("REJECTED", "insurer", "rejected", 1),
        event("ONLY_FLEET", "fleet", "approved", 1),
    ]
    messages = [(vin, _message(f"m-{vin}", DATA)) for vin in
                ("APPROVED", "PENDING", "REVOKED", "REJECTED", "ONLY_FLEET", "UNKNOWN")]
    # A message whose only property the insurer may not see: no empty document for it.
    messages.append(("APPROVED", _message("m-location", {"vehicle_location": DATA["vehicle_location"],
                                                         "charging": DATA["charging"]})))
    with TestPipeline() as pipeline:
        if shape == "per message":
            table = pipeline | "Events" >> beam.Create(events) | ActivationTable()
            documents = (pipeline | "Messages" >> beam.Create(messages)
                         | PermitByActivation(CONFIG.applications, table))
        else:
            table = pipeline | KnownActivationTable(events)
            permit = PermitByActivation(CONFIG.applications, table).of_lists()
            documents = (pipeline | "Messages" >> beam.Create(messages)
                         | permit.prepare()
                         | beam.GroupByKey() | beam.MapTuple(lambda vin, ms: (vin, list(ms)))
                         | permit | beam.FlatMap(lambda pairs: pairs))
        out = documents | beam.MapTuple(lambda app, r: (app, r.vin, orjson.loads(r.document)))
        expected_fleet = {"diagnostics": DATA["diagnostics"],
                          "charging": {"battery_level": ENTRY}}
        expected = [
            ("fleet", "APPROVED", _doc("fleet", "APPROVED", "m-APPROVED", expected_fleet)),
            ("insurer", "APPROVED", _doc("insurer", "APPROVED", "m-APPROVED",
                                         {"diagnostics": {"odometer": ENTRY}})),
            ("fleet", "ONLY_FLEET", _doc("fleet", "ONLY_FLEET", "m-ONLY_FLEET", expected_fleet)),
            ("fleet", "APPROVED", _doc("fleet", "APPROVED", "m-location",
                                       {"charging": {"battery_level": ENTRY}})),
        ]
        assert_that(out, equal_to(expected))


def _doc(app: str, vin: str, smid: str, data: dict) -> dict:
    return {"version": 1, "message_id": message_id(smid, app), "application_id": app,
            "vin": vin, "brand": "tesla", "data": data}


def test_message_id_depends_on_message_and_application_only() -> None:
    assert message_id("abc", "fleet") == message_id("abc", "fleet")
    assert message_id("abc", "fleet") != message_id("abc", "insurer")
    assert message_id("abc", "fleet") != message_id("abd", "fleet")


_KEYED_OUT: list = []


def _keep_keyed(element) -> None:
    _KEYED_OUT.append(element)


def test_keyed_join_applies_approvals_and_revocations_to_later_messages() -> None:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    from fleetstream.transforms.order_and_permit_keyed import OrderAndPermitKeyed

    def at(seconds: int, name: str) -> TimestampedValue:
        return TimestampedValue(("V", _message(name, DATA)), seconds)

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = (TestStream(output_tags={"messages", "events"})
              .advance_watermark_to(10, tag="messages").advance_watermark_to(10, tag="events")
              .add_elements([at(10, "before-approval")], tag="messages")
              .advance_watermark_to(15, tag="messages").advance_watermark_to(15, tag="events")
              .add_elements([event("V", "insurer", "approved", 1)], tag="events")
              .add_elements([at(20, "approved")], tag="messages")
              .advance_watermark_to(25, tag="messages").advance_watermark_to(25, tag="events")
              .add_elements([event("V", "insurer", "revoked", 2),
                             event("V", "insurer", "approved", 0)],  # older: ignored
                            tag="events")
              .add_elements([at(30, "after-revocation")], tag="messages")
              .advance_watermark_to_infinity(tag="messages")
              .advance_watermark_to_infinity(tag="events"))
    _KEYED_OUT.clear()
    with TestPipeline(options=options) as pipeline:
        streams = pipeline | stream
        _ = (streams["messages"]
             | "AsLists" >> beam.Map(lambda pair: [pair])
             | OrderAndPermitKeyed(CONFIG.applications, streams["events"], reorder_window_s=0,
                                   cold_start_hold_s=0)
             | "FromLists" >> beam.FlatMap(lambda pairs: pairs)
             | beam.MapTuple(lambda app, r: (app, orjson.loads(r.document)["message_id"]))
             | beam.Map(_keep_keyed))
    # Before the approval nothing; while approved, the insurer only; after the revocation nothing.
    assert _KEYED_OUT == [("insurer", message_id("approved", "insurer"))]


def test_a_pseudonymous_application_gets_its_own_id_and_the_same_message_id() -> None:
    from fleetstream.schemas.vehicle_ids import pseudonymous_id
    from fleetstream.transforms.permissions import application_rules, documents, prepare_data

    config = parse_config({"applications": [
        {"id": "fleet", "permissions": ["diagnostics.*"], "sink": {"type": "file", "path": "u"},
         "vehicle_ids": "pseudonymous", "vehicle_id_secret_env": "FLEET_SECRET"},
        {"id": "insurer", "permissions": ["diagnostics.odometer"],
         "sink": {"type": "file", "path": "u"}}]}, environ={"FLEET_SECRET": "s3cret"})
    applications = application_rules(config.applications)
    message = _message("m", DATA)
    made = list(documents("5YJ3E7EB0KF000001", message, {"fleet", "insurer"}, applications,
                          _Counts()))
    prepared = message._replace(data=prepare_data(message.data, applications))
    assert made == list(documents("5YJ3E7EB0KF000001", prepared, {"fleet", "insurer"},
                                           applications, _Counts()))
    (_, fleet), (_, insurer) = made
    seen_as = pseudonymous_id(b"s3cret", "5YJ3E7EB0KF000001")
    assert fleet.vin == orjson.loads(fleet.document)["vin"] == seen_as
    assert b"5YJ3E7EB0KF000001" not in fleet.document
    assert fleet.message_id == message_id("m", "fleet")
    assert insurer.vin == orjson.loads(insurer.document)["vin"] == "5YJ3E7EB0KF000001"
