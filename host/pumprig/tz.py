"""Time zones on the host: the UTC offset a clock shows, and when it next changes.

The board knows no zones: `clock.set` gives it the offset now and the next change (epoch_s,
offset_s after it); `pumprig clock sync` and `pumprig simulate --tz` both compute them here.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable

from .errors import PumprigError

HOUR_S = 3600


def offset_fn(tz_name: str | None) -> Callable[[int], int]:
    """offset_s(epoch_s) for a named zone (IANA name), or the host's local zone for None."""
    if not tz_name:
        return lambda t: time.localtime(t).tm_gmtoff
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PumprigError("unknown time zone %r (use a name like Europe/Paris)" % tz_name) from None
    return lambda t: int(dt.datetime.fromtimestamp(t, zone).utcoffset().total_seconds())


def next_offset_change(offset_at: Callable[[int], int], now_s: int, horizon_days: int = 400):
    """(epoch_s, new offset_s) of the first offset change after now_s within the horizon, to
    the second, or None. Scans hour by hour (no zone changes twice within an hour), then
    bisects."""
    cur = offset_at(now_s)
    t = now_s
    for _ in range(horizon_days * 24):
        if offset_at(t + HOUR_S) != cur:
            lo, hi = t, t + HOUR_S  # offset(lo) == cur, offset(hi) != cur
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset_at(mid) == cur:
                    lo = mid
                else:
                    hi = mid
            return hi, offset_at(hi)
        t += HOUR_S
    return None
