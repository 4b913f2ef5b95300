"""The raw archive: its folder layout, its file formats (gzip JSON lines, Avro) and the transform that writes it."""
