"""The jobs (replay, demo, streaming) and the `fleetstream` command line that assembles them."""
