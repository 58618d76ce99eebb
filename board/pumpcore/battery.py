"""Battery state from cell-voltage samples: OK -> ERI -> EOS, plus a latched brown-out fault.

- Smoothing: integer exponential average, kept scaled by 2**shift so a steady input is
  reached exactly from above and below (acc += mv - (acc >> shift); avg = acc >> shift;
  shift=2 is avg += (mv - avg) / 4, shift=0 no smoothing). The first sample initialises it.
- ERI (elective replacement) when the average is below eri_mv, EOS (end of service) below
  eos_mv. Going back to a better state needs the average above threshold + hyst_mv.
- Debounce: each transition needs `debounce` consecutive samples that qualify for it.
- Brown-out: one raw sample below brownout_mv (a dip under motor load) latches `fault` until
  clear_fault(); the app falls back to the minimum rate and raises BATTERY_FAULT.
- ERI starts a countdown (eri_days, 90 by default) measured on the wall clock.

sample() returns the flag changes as a list of (name, bool), name in "eri", "eos", "fault";
the state string is "ok", "eri" or "eos".
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_DAY_S = const(86400)

OK = "ok"
ERI = "eri"
EOS = "eos"


class BatteryError(ValueError):
    pass


class BatteryMonitor:
    def __init__(
        self,
        eri_mv=3300,
        eos_mv=3000,
        brownout_mv=2800,
        hyst_mv=50,
        debounce=8,
        eri_days=90,
        shift=2,
    ):
        for name, v in (
            ("eri_mv", eri_mv),
            ("eos_mv", eos_mv),
            ("brownout_mv", brownout_mv),
            ("hyst_mv", hyst_mv),
            ("eri_days", eri_days),
            ("shift", shift),
        ):
            if not isinstance(v, int) or v < 0:
                raise BatteryError("%s must be an integer >= 0" % name)
        if not isinstance(debounce, int) or debounce < 1:
            raise BatteryError("debounce must be an integer >= 1")
        if not eos_mv < eri_mv:
            raise BatteryError("need eos_mv < eri_mv")
        if shift > 8:
            raise BatteryError("shift must be <= 8")
        self.eri_mv = eri_mv
        self.eos_mv = eos_mv
        self.brownout_mv = brownout_mv
        self.hyst_mv = hyst_mv
        self.debounce = debounce
        self.eri_days = eri_days
        self.shift = shift
        self._acc = None  # average * 2**shift; None until the first sample
        self.last_mv = None
        self.last_ms = None
        self.eri = False
        self.eos = False
        self.fault = False
        self.eri_epoch_s = None
        self.fault_epoch_s = None
        self.fault_mv = None
        # consecutive qualifying samples, capped at debounce
        self._n_below_eri = 0
        self._n_below_eos = 0
        self._n_above_eri = 0
        self._n_above_eos = 0

    # --- state ------------------------------------------------------------------------------

    @property
    def avg_mv(self):
        """The smoothed cell voltage, None before the first sample."""
        if self._acc is None:
            return None
        return self._acc >> self.shift

    @property
    def state(self):
        if self.eos:
            return EOS
        if self.eri:
            return ERI
        return OK

    def eri_days_left(self, epoch_s):
        """Whole days left of the ERI countdown (rounded up, clamped to 0..eri_days);
        None when not in ERI or the ERI start is unknown (wall clock not set)."""
        if not self.eri or self.eri_epoch_s is None or epoch_s is None:
            return None
        left_s = self.eri_days * _DAY_S - (epoch_s - self.eri_epoch_s)
        if left_s <= 0:
            return 0
        days = -(-left_s // _DAY_S)
        return days if days < self.eri_days else self.eri_days

    def eri_end_epoch_s(self):
        if not self.eri or self.eri_epoch_s is None:
            return None
        return self.eri_epoch_s + self.eri_days * _DAY_S

    # --- input ------------------------------------------------------------------------------

    def sample(self, mv, now_ms, epoch_s):
        """Feed one raw ADC reading of the cell. Returns the flag changes (possibly [])."""
        if not isinstance(mv, int):
            raise BatteryError("mv must be an integer")
        changes = []
        self.last_mv = mv
        self.last_ms = now_ms
        if mv < self.brownout_mv and not self.fault:
            self.fault = True
            self.fault_epoch_s = epoch_s
            self.fault_mv = mv
            changes.append(("fault", True))

        sh = self.shift
        if self._acc is None:
            self._acc = mv << sh
        else:
            self._acc += mv - (self._acc >> sh)
        avg = self.avg_mv

        n = self.debounce
        self._n_below_eri = _count(self._n_below_eri, avg < self.eri_mv, n)
        self._n_below_eos = _count(self._n_below_eos, avg < self.eos_mv, n)
        self._n_above_eri = _count(self._n_above_eri, avg > self.eri_mv + self.hyst_mv, n)
        self._n_above_eos = _count(self._n_above_eos, avg > self.eos_mv + self.hyst_mv, n)

        # worse: ERI before EOS; better: EOS off before ERI off
        if not self.eri and self._n_below_eri >= n:
            self.eri = True
            self.eri_epoch_s = epoch_s
            changes.append(("eri", True))
        if not self.eos and self._n_below_eos >= n:
            self.eos = True
            changes.append(("eos", True))
        if self.eos and self._n_above_eos >= n:
            self.eos = False
            changes.append(("eos", False))
        if self.eri and not self.eos and self._n_above_eri >= n:
            self.eri = False
            self.eri_epoch_s = None
            changes.append(("eri", False))
        if self.eri and self.eri_epoch_s is None and epoch_s is not None:
            self.eri_epoch_s = epoch_s  # ERI began while the wall clock was unknown
        return changes

    def settling(self):
        """True while a reading is on its way somewhere: the average still moving towards the
        last sample, or a debounce count started. The app then samples more often."""
        if self.last_mv is None or self._acc is None:
            return False
        if abs(self.last_mv - self.avg_mv) > self.hyst_mv:
            return True
        n = self.debounce
        for c in (self._n_below_eri, self._n_below_eos, self._n_above_eri, self._n_above_eos):
            if 0 < c < n:
                return True
        return False

    def clear_fault(self):
        """Reset the brown-out latch. Returns True if it was set."""
        was = self.fault
        self.fault = False
        self.fault_epoch_s = None
        self.fault_mv = None
        return was

    # --- persistence (state only: thresholds come from the board config) --------------------

    def to_dict(self):
        return {
            "avg_mv": self.avg_mv,
            "eri": self.eri,
            "eos": self.eos,
            "fault": self.fault,
            "eri_epoch_s": self.eri_epoch_s,
            "fault_epoch_s": self.fault_epoch_s,
            "fault_mv": self.fault_mv,
        }

    def restore(self, d):
        """Load state saved by to_dict() (debounce counters restart from zero)."""
        avg = d.get("avg_mv")
        self._acc = None if avg is None else avg << self.shift
        self.eri = bool(d.get("eri", False))
        self.eos = bool(d.get("eos", False))
        if self.eos:
            self.eri = True
        self.fault = bool(d.get("fault", False))
        self.eri_epoch_s = d.get("eri_epoch_s")
        self.fault_epoch_s = d.get("fault_epoch_s")
        self.fault_mv = d.get("fault_mv")
        self._n_below_eri = self._n_below_eos = self._n_above_eri = self._n_above_eos = 0
        return self

    @classmethod
    def from_dict(cls, d, **config):
        """BatteryMonitor(**config) with the state of d."""
        return cls(**config).restore(d)


def _count(c, cond, cap):
    if not cond:
        return 0
    return c + 1 if c < cap else cap
