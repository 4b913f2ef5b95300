"""Kafka: the job's read and write transforms, the Python partition reader, producers, offsets, topic creation."""
