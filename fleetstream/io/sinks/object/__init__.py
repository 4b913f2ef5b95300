"""Object-store sinks: one format (format.py: JSON lines or Avro, names from a path template) over any store (file, S3, Azure Blob)."""
