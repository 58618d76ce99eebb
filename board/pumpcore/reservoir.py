"""The drug reservoir: a volume computed from delivery, never measured.

A real implant has no level sensor: the volume is what was filled minus what the motor was
commanded to deliver, and errors only show up at the next refill (the aspirated remainder).
All volumes are integer nL, rates integer nL/day, times integer seconds.
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_DAY_S = const(86400)

OK = "ok"
LOW = "low"
EMPTY = "empty"


class ReservoirError(ValueError):
    pass


def _check_int(name, v, lo=0):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ReservoirError("%s must be an integer >= %d" % (name, lo))


def _ceil_div(a, b):
    return -(-a // b)


class Reservoir:
    """Reservoir(capacity_nl, low_nl=2_000_000, empty_nl=1_000_000, volume_nl=0)

    level() is "low" at volume <= low_nl and "empty" at volume <= empty_nl.
    """

    def __init__(self, capacity_nl, low_nl=2_000_000, empty_nl=1_000_000, volume_nl=0):
        _check_int("capacity_nl", capacity_nl, 1)
        self.capacity_nl = capacity_nl
        self.low_nl = 0
        self.empty_nl = 0
        self.set_thresholds(low_nl, empty_nl)
        _check_int("volume_nl", volume_nl)
        if volume_nl > capacity_nl:
            raise ReservoirError("volume_nl exceeds the capacity")
        self.volume_nl = volume_nl
        self.refilled_epoch_s = None
        self.refill_by_epoch_s = None

    def set_thresholds(self, low_nl, empty_nl):
        """Programmable LOW and EMPTY volumes: 0 <= empty_nl <= low_nl <= capacity_nl."""
        _check_int("low_nl", low_nl)
        _check_int("empty_nl", empty_nl)
        if empty_nl > low_nl or low_nl > self.capacity_nl:
            raise ReservoirError("need 0 <= empty_nl <= low_nl <= capacity_nl")
        self.low_nl = low_nl
        self.empty_nl = empty_nl

    # --- accounting -------------------------------------------------------------------------

    def on_delivered(self, nl):
        """Subtract a delivered volume (clamped at 0). Returns the new volume."""
        _check_int("nl", nl)
        v = self.volume_nl - nl
        self.volume_nl = v if v > 0 else 0
        return self.volume_nl

    def refill(self, volume_nl, epoch_s, refill_by_epoch_s=None):
        """The reservoir now holds volume_nl (the old remainder was aspirated).

        refill_by_epoch_s (drug stability date) replaces any earlier one; None clears it.
        Returns the computed volume before the refill (compare with what was aspirated).
        """
        _check_int("volume_nl", volume_nl)
        if volume_nl > self.capacity_nl:
            raise ReservoirError(
                "refill of %d nL exceeds the capacity of %d nL" % (volume_nl, self.capacity_nl)
            )
        if refill_by_epoch_s is not None:
            _check_int("refill_by_epoch_s", refill_by_epoch_s)
            if epoch_s is not None and refill_by_epoch_s <= epoch_s:
                raise ReservoirError("refill-by date is not in the future")
        old = self.volume_nl
        self.volume_nl = volume_nl
        self.refilled_epoch_s = epoch_s
        self.refill_by_epoch_s = refill_by_epoch_s
        return old

    # --- state ------------------------------------------------------------------------------

    def level(self):
        v = self.volume_nl
        if v <= self.empty_nl:
            return EMPTY
        if v <= self.low_nl:
            return LOW
        return OK

    def refill_due(self, epoch_s):
        """True once the refill-by date has been reached."""
        rb = self.refill_by_epoch_s
        return rb is not None and epoch_s is not None and epoch_s >= rb

    # --- projections (integer-exact) --------------------------------------------------------

    def seconds_to(self, target_nl, rate_nl_day):
        """Seconds until the volume is <= target_nl at rate_nl_day (rounded up, so the volume
        has reached the target at that second). 0 if already there, None if never (rate 0)."""
        _check_int("target_nl", target_nl)
        _check_int("rate_nl_day", rate_nl_day)
        above = self.volume_nl - target_nl
        if above <= 0:
            return 0
        if rate_nl_day == 0:
            return None
        return _ceil_div(above * _DAY_S, rate_nl_day)

    def days_to(self, target_nl, rate_nl_day):
        """Whole days until the target is reached (rounded up); 0 if there, None if never."""
        s = self.seconds_to(target_nl, rate_nl_day)
        if s is None:
            return None
        return _ceil_div(s, _DAY_S)

    def projected_refill_epoch_s(self, now_epoch_s, rate_nl_day, extra_nl_day=0, target_nl=None):
        """Epoch at which LOW (or target_nl) is reached if the basal rate runs and every
        allowed patient bolus is taken (extra_nl_day). None if never or the clock is unknown."""
        _check_int("extra_nl_day", extra_nl_day)
        if target_nl is None:
            target_nl = self.low_nl
        s = self.seconds_to(target_nl, rate_nl_day + extra_nl_day)
        if s is None or now_epoch_s is None:
            return None
        return now_epoch_s + s

    # --- persistence ------------------------------------------------------------------------

    def to_dict(self):
        return {
            "capacity_nl": self.capacity_nl,
            "low_nl": self.low_nl,
            "empty_nl": self.empty_nl,
            "volume_nl": self.volume_nl,
            "refilled_epoch_s": self.refilled_epoch_s,
            "refill_by_epoch_s": self.refill_by_epoch_s,
        }

    @classmethod
    def from_dict(cls, d):
        try:
            r = cls(d["capacity_nl"], d["low_nl"], d["empty_nl"], d["volume_nl"])
        except (KeyError, TypeError) as e:
            raise ReservoirError("bad reservoir record: %r" % (e,)) from None
        r.refilled_epoch_s = d.get("refilled_epoch_s")
        r.refill_by_epoch_s = d.get("refill_by_epoch_s")
        return r
