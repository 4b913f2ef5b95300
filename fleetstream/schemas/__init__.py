"""What the data is: the property catalogue, raw envelopes, documents, dead letters, configuration."""
