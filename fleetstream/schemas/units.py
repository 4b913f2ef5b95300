"""Unit factors (DATA-CONTRACTS §2) as `(multiply, divide)` pairs.

A value in the source unit times `multiply`, divided by `divide`, is the value
in the catalogue unit. Percent and kPa divide by 100 rather than multiply by
0.01 so that `57 %` becomes `0.57`, not `0.5700000000000001`.
"""
from __future__ import annotations

Scale = tuple[float, float]

KM_PER_MILE = 1.609344

SAME: Scale = (1.0, 1.0)
MILES_TO_KM: Scale = (KM_PER_MILE, 1.0)
MPH_TO_KMH: Scale = (KM_PER_MILE, 1.0)
KPA_TO_BAR: Scale = (1.0, 100.0)
PERCENT_TO_FRACTION: Scale = (1.0, 100.0)
