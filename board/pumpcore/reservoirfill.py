"""The reservoir's fill (pumpcore.reservoir): a refill's checks, the projections of
when it runs low (status) and the record form.
Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Functions taking the reservoir.
"""


_DAY_S = 86400


def _check_int(name, v, lo=0):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError("%s must be an integer >= %d" % (name, lo))


def _ceil_div(a, b):
    return -(-a // b)


def check_refill(capacity_nl, volume_nl, epoch_s, refill_by_epoch_s):
    """A refill's figures, checked (ValueError): the volume within the capacity, a refill-by
    date in the future. Reservoir.refill then takes them."""
    _check_int("volume_nl", volume_nl)
    if volume_nl > capacity_nl:
        raise ValueError(
            "refill of %d nL exceeds the capacity of %d nL" % (volume_nl, capacity_nl)
        )
    if refill_by_epoch_s is not None:
        _check_int("refill_by_epoch_s", refill_by_epoch_s)
        if epoch_s is not None and refill_by_epoch_s <= epoch_s:
            raise ValueError("refill-by date is not in the future")


def seconds_to(r, target_nl, rate_nl_day):
    """Seconds until the volume is <= target_nl at rate_nl_day (rounded up, so the volume
    has reached the target at that second). 0 if already there, None if never (rate 0)."""
    _check_int("target_nl", target_nl)
    _check_int("rate_nl_day", rate_nl_day)
    above = r.volume_nl - target_nl
    if above <= 0:
        return 0
    if rate_nl_day == 0:
        return None
    return _ceil_div(above * _DAY_S, rate_nl_day)

def days_to(r, target_nl, rate_nl_day):
    """Whole days until the target is reached (rounded up); 0 if there, None if never."""
    s = seconds_to(r, target_nl, rate_nl_day)
    if s is None:
        return None
    return _ceil_div(s, _DAY_S)

def projected_refill_epoch_s(r, now_epoch_s, rate_nl_day, extra_nl_day=0, target_nl=None):
    """Epoch at which LOW (or target_nl) is reached if the basal rate runs and every
    allowed patient bolus is taken (extra_nl_day). None if never or the clock is unknown."""
    _check_int("extra_nl_day", extra_nl_day)
    if target_nl is None:
        target_nl = r.low_nl
    s = seconds_to(r, target_nl, rate_nl_day + extra_nl_day)
    if s is None or now_epoch_s is None:
        return None
    return now_epoch_s + s


def to_dict(r):
    return {
        "capacity_nl": r.capacity_nl,
        "low_nl": r.low_nl,
        "empty_nl": r.empty_nl,
        "volume_nl": r.volume_nl,
        "refilled_epoch_s": r.refilled_epoch_s,
        "refill_by_epoch_s": r.refill_by_epoch_s,
    }


def from_dict(cls, d):
    try:
        r = cls(d["capacity_nl"], d["low_nl"], d["empty_nl"], d["volume_nl"])
    except (KeyError, TypeError) as e:
        raise ValueError("bad reservoir record: %r" % (e,)) from None
    r.set_fill(r.volume_nl, d.get("refilled_epoch_s"), d.get("refill_by_epoch_s"))
    return r
