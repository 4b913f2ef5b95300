"""Operators' eyes: the metrics exporter, Prometheus's rules and Alertmanager's routing."""
