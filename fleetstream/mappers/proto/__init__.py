"""Wire formats of binary sources, as protobuf schemas and their generated Python code.

`tesla_fleet_telemetry.proto` declares the part of Tesla fleet-telemetry's
records that the `tesla_telemetry` mapper reads; `tesla_fleet_telemetry_pb2.py`
is generated from it, committed, and never edited: its header says how to
regenerate it after a change to the `.proto`.
"""
