"""Delivery sinks: the `Sink` interface (base.py), the one registry that maps a `type` to its class, one module per sink."""
