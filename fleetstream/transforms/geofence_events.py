"""GeofenceEvents: each application's geofence crossings, from the documents it receives.

Input: the permitted documents, `(application_id, Record)` (lists of them with
`batches=True`); output: geofence events (DATA-CONTRACTS §11) in the same form, a
`Record` whose `document` is the event's JSON, ready for `Deliver` to write through
the application's own sink beside its documents.

The step reads the documents, not the mapped messages, so the rules of who may see
what are applied once, upstream: an application receives a document only while the
vehicle is approved for it and only with the properties it may see, so a vehicle that
is not approved, or an application without `vehicle_location.coordinates`, gives no
location and no event. A document's `vin` is already the vehicle id the application
sees (`Application.vehicle_id`), so events carry the same id and the state is kept
under it. Only applications with geofences are read; the others cost nothing.

Per vehicle and application the step keeps the fences the vehicle is inside
(`FenceIndex.step` applies the rule, with hysteresis; docs/geofences.md):

- bounded input (replay): every location of a vehicle is grouped, sorted by time and
  run through the rule from "inside nothing", so a replay gives the same events for
  the same input whatever the bundle order;
- unbounded input (the streaming job): keyed state per application and vehicle shard
  (`shards`, like Deliver's) holds each vehicle's fences and its newest location time;
  each bundle's locations are applied in time order and a location not newer than the
  vehicle's newest is skipped (a late message changes no fence).

Counter per application: `app/<id>.geofence_events`.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import apache_beam as beam
import orjson
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from fleetstream.runtime.group_in_bundle import GroupBatchesInBundle
from fleetstream.schemas.config import Application
from fleetstream.schemas.delivery import Record
from fleetstream.schemas.geofences import Geofence, geofence_event, geofence_message_id
from fleetstream.transforms import coders  # noqa: F401 - registers the NamedTuple coders
from fleetstream.transforms.counter_names import APP_SCOPE
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.geofences import Crossing, FenceIndex, Location, locations_of
from fleetstream.transforms.ordering import vehicle_shard

#: (application_id, vehicle id the application sees, Location as a plain tuple)
_Item = tuple[str, str, tuple[int, float, float]]
#: application id -> its fences
_Fences = Mapping[str, tuple[Geofence, ...]]


def fenced_applications(applications: Sequence[Application]) -> dict[str, tuple[Geofence, ...]]:
    """The applications that have geofences, with them."""
    return {a.id: a.geofences for a in applications if a.geofences}


def location_items(pairs: Iterable[tuple[str, Record]], fenced: Mapping[str, Any]
                   ) -> list[_Item]:
    """The locations in the documents of applications with fences."""
    items = []
    for application_id, record in pairs:
        if application_id not in fenced or b'"coordinates"' not in record.document:
            continue
        data = orjson.loads(record.document).get("data") or {}
        items.extend((application_id, record.vin, tuple(location))
                     for location in locations_of(data))
    return items


def event_record(application_id: str, vehicle_id: str, crossing: Crossing) -> Record:
    """A crossing as what Deliver writes."""
    return Record(vehicle_id,
                  geofence_message_id(application_id, vehicle_id, crossing.geofence_id,
                                      crossing.event, crossing.timestamp_ms),
                  crossing.timestamp_ms,
                  geofence_event(application_id, vehicle_id, crossing.geofence_id,
                                 crossing.event, crossing.timestamp_ms, crossing.latitude,
                                 crossing.longitude),
                  # the delivery latency of an event runs from the location's own time
                  crossing.timestamp_ms)


class GeofenceEvents(beam.PTransform):
    """Documents -> geofence events of the applications with fences (empty when none has)."""

    def __init__(self, applications: Sequence[Application], shards: int = 1,
                 batches: bool = False) -> None:
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self._fenced = fenced_applications(applications)
        self._shards = shards
        self._batches = batches

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        fenced, shards = self._fenced, self._shards
        if self._batches:
            locate = beam.Map(location_items, fenced)
        else:
            locate = beam.Map(lambda pair: location_items([pair], fenced))
        items = records | "Locations" >> locate.with_output_types(list[_Item])
        if records.is_bounded:
            events = (items
                      | "EachLocation" >> beam.FlatMap(lambda listed: (
                          ((app, vehicle), location) for app, vehicle, location in listed)
                      ).with_output_types(tuple[tuple[str, str], tuple[int, float, float]])
                      | "PerVehicle" >> beam.GroupByKey()
                      | "Crossings" >> beam.ParDo(_RouteFn(fenced)).with_output_types(
                          tuple[str, Record]))
            if not self._batches:
                return events
            return events | "AsLists" >> beam.Map(lambda pair: [pair]).with_output_types(
                list[tuple[str, Record]])
        events = (items
                  | "GroupByApplicationAndShard" >> GroupBatchesInBundle(
                      lambda item: (item[0], vehicle_shard(item[1], shards)), tuple[str, int])
                  | "Crossings" >> beam.ParDo(_KeyedCrossingsFn(fenced)).with_output_types(
                      list[tuple[str, Record]]))
        if self._batches:
            return events
        return events | "FromLists" >> beam.FlatMap(lambda pairs: pairs).with_output_types(
            tuple[str, Record])


class _RouteFn(beam.DoFn):
    """Bounded input: a vehicle's whole route, in time order, from outside every fence."""

    def __init__(self, fenced: _Fences) -> None:
        self._fenced = dict(fenced)
        self._counts = BundleCounts()

    def setup(self) -> None:
        self._indexes = {app: FenceIndex(fences) for app, fences in self._fenced.items()}

    def process(self, element: tuple[tuple[str, str], Iterable[tuple[int, float, float]]]
                ) -> Iterable[tuple[str, Record]]:
        (application_id, vehicle_id), locations = element
        # in time order, one location per time (the first of a tie, by coordinates), so
        # the route does not depend on the order the runner grouped them in
        route = [Location(*location) for location in
                 sorted({ms: (ms, lat, lon) for ms, lat, lon in sorted(locations, reverse=True)
                         }.values())]
        _, crossings = self._indexes[application_id].along(frozenset(), route)
        if crossings:
            self._counts.add(f"{APP_SCOPE}{application_id}.geofence_events", len(crossings))
        for crossing in crossings:
            yield application_id, event_record(application_id, vehicle_id, crossing)

    def finish_bundle(self) -> None:
        self._counts.flush()


class _KeyedCrossingsFn(beam.DoFn):
    """Unbounded input: per application and vehicle shard, each vehicle's fences in state."""

    #: vehicle id -> (newest location ms applied, ids of the fences it is inside)
    VEHICLES = ReadModifyWriteStateSpec("geofence_vehicles", FastPrimitivesCoder())

    def __init__(self, fenced: _Fences) -> None:
        self._fenced = dict(fenced)
        self._counts = BundleCounts()

    def setup(self) -> None:
        self._indexes = {app: FenceIndex(fences) for app, fences in self._fenced.items()}

    def process(self, element: tuple[tuple[str, int], list[_Item]],
                state=beam.DoFn.StateParam(VEHICLES)) -> Iterable[list[tuple[str, Record]]]:
        (application_id, _), items = element
        index = self._indexes[application_id]
        vehicles: dict[str, tuple[int, tuple[str, ...]]] = state.read() or {}
        per_vehicle: dict[str, list[Location]] = {}
        for _, vehicle_id, location in items:
            per_vehicle.setdefault(vehicle_id, []).append(Location(*location))
        events: list[tuple[str, Record]] = []
        for vehicle_id, locations in per_vehicle.items():
            newest, inside = vehicles.get(vehicle_id, (None, ()))
            current = frozenset(inside)
            for location in sorted(locations):
                if newest is not None and location.timestamp_ms <= newest:
                    continue        # late or repeated: the fences have moved past it
                newest = location.timestamp_ms
                current, crossings = index.step(current, location)
                events.extend((application_id, event_record(application_id, vehicle_id, c))
                              for c in crossings)
            vehicles[vehicle_id] = (newest, tuple(sorted(current)))
        state.write(vehicles)
        if events:
            self._counts.add(f"{APP_SCOPE}{application_id}.geofence_events", len(events))
            yield events

    def finish_bundle(self) -> None:
        self._counts.flush()
