"""The names of FleetStream's Beam counters: `fleetstream:<scope>.<what>`.

Shared by the steps that count (`counters.BundleCounts`), the pure rules that
name what they count, and the accounting that reads the totals back.
"""
from __future__ import annotations

NAMESPACE = "fleetstream"
#: prefix of per-application counter scopes, so an application never shares a source's name
APP_SCOPE = "app/"
#: scope of the replay's own counters (files read, broken files, skipped envelopes)
REPLAY_SCOPE = "replay"
