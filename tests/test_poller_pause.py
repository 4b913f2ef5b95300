"""SourcePoller's dispatch: no call before a 429's pause has passed, also when the 429 came
while the call waited for the rate limit (no servers: the call itself is recorded)."""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.poll_rules import PollSettings
from fleetstream.ingest.poller import SourcePoller, _now_ms


def test_a_pause_that_comes_while_a_call_waits_for_the_rate_limit_holds_that_call() -> None:
    follower = SimpleNamespace(listeners=[], vehicles={"VIN1"})
    poller = SourcePoller("mercedes", "raw.mercedes", PollSettings(
        "http://127.0.0.1:1/{vin}", rate_per_s=2.0), follower, writer=None,
        metrics=IngestMetrics(), seen={})
    started: list[float] = []

    async def recorded_call(_session, _vin: str, _due_ms: int) -> None:
        started.append(time.monotonic())

    poller._call = recorded_call                   # type: ignore[method-assign]
    poller.due["VIN1"] = _now_ms()

    async def main() -> float:
        stopping = asyncio.get_running_loop().create_future()
        await poller._rate.acquire()               # the next start waits 0.5 s for the rate
        dispatch = asyncio.create_task(poller._dispatch(None, "VIN1", stopping))
        await asyncio.sleep(0.1)                   # the dispatch waits for the rate limit ...
        poller._paused_until_ms = _now_ms() + 1000  # ... when a 429 pauses the OEM for 1 s
        paused_until = time.monotonic() + 1.0
        assert await dispatch
        await asyncio.sleep(0)                     # let the call's task start
        return paused_until

    paused_until = asyncio.run(main())
    assert len(started) == 1 and started[0] >= paused_until - 0.01
