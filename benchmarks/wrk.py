"""Run wrk (Debian's HTTP load generator) and read its report."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Sequence


def wrk_phase(url: str, connections: int, duration_s: float, script: Path, threads: int = 1,
              prefix: Sequence[str] = ()) -> tuple[float, int, dict[str, float]]:
    """(2xx answers/s, other answers, latency percentiles in ms) of one wrk run; `prefix`
    goes before the command (e.g. `taskset -c 1` to pin it)."""
    out = subprocess.run([*prefix, "wrk", f"-t{threads}", f"-c{connections}",
                          f"-d{duration_s:.0f}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    seconds = _ms(re.search(r"requests in ([\d.]+m?s)", out).group(1)) / 1000
    percentiles = {p: _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)$", out, re.M)}
    if "99" not in percentiles:
        # seen when the machine was so loaded that wrk's run ended without a distribution
        raise RuntimeError(f"wrk printed no 99th percentile (no answers in time?):\n{out}")
    return (total - errors) / seconds, errors, percentiles


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
