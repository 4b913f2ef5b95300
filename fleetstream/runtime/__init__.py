"""What exists only because of Beam, Flink or Kafka-client bugs and gaps, fenced off from the product.

Each module's docstring names the upstream issue it works around (or the gap it fills)
and when it can go. Nothing here imports the product (`schemas`, `mappers`,
`transforms`, `io`, `settings`, `pipelines`) or `dev`; `tests/test_layers.py` checks it.
"""
