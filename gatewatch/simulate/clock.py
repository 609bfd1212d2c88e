"""Event-time helpers: RFC 3339 timestamps with milliseconds, and the daily rhythm of traffic."""

from __future__ import annotations

import time
from functools import lru_cache

# Relative request volume per local hour for human traffic (quiet at night, peaks late morning and
# mid-afternoon, a mobile evening shoulder). Normalised below to a mean of 1 over the day.
_HOURLY_RAW = (0.22, 0.15, 0.11, 0.09, 0.09, 0.12, 0.25, 0.50, 0.85, 1.15, 1.35, 1.45,
               1.40, 1.45, 1.50, 1.45, 1.35, 1.20, 1.00, 0.90, 0.85, 0.75, 0.55, 0.35)
_MEAN = sum(_HOURLY_RAW) / 24
HOURLY = tuple(v / _MEAN for v in _HOURLY_RAW)
DIURNAL_MAX = max(HOURLY)


def quantize(t: float) -> float:
    """Event times carry milliseconds, exactly as they are written."""
    return round(t * 1000.0) / 1000.0


@lru_cache(maxsize=4096)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def rfc3339(t: float) -> str:
    """Epoch seconds → '2026-11-18T10:00:00.123Z'."""
    second, ms = divmod(round(t * 1000.0), 1000)
    return f"{_second(second)}.{ms:03d}Z"


def local_hour(t: float, tz_hours: float) -> float:
    return (t / 3600.0 + tz_hours) % 24.0


def diurnal(t: float, tz_hours: float) -> float:
    """Relative human activity at event time `t` in a zone `tz_hours` from UTC (mean 1 over a day)."""
    h = local_hour(t, tz_hours)
    i = int(h)
    a, b = HOURLY[i], HOURLY[(i + 1) % 24]
    return a + (b - a) * (h - i)


def night_distance(t: float, tz_hours: float, target_hour: float = 3.0) -> float:
    """Hours between local time at `t` and `target_hour` (circular), e.g. how far from 3 a.m."""
    d = abs(local_hour(t, tz_hours) - target_hour)
    return min(d, 24.0 - d)
