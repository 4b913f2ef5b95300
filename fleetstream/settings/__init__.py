"""Reading what configures a job: the applications' configuration, the streaming job's
settings and the Kafka topic names, each validated at start-up (ConfigError names the entry)."""
