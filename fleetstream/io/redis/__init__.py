"""Redis: the latest-state store (DATA-CONTRACTS §10)."""
