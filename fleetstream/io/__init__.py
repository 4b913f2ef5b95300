"""Sources and sinks: envelope files, the raw archive, Kafka, and the delivery sinks, in one folder per family."""
