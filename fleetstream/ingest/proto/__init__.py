"""The gRPC push protocol (`ingest.proto`) and its generated Python stubs.

`ingest_pb2.py` and `ingest_pb2_grpc.py` are generated, committed, and never edited:
their headers say how to regenerate them after a change to `ingest.proto`.
"""
