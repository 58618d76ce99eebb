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

OK = "ok"
ERI = "eri"
EOS = "eos"



class BatteryMonitor:
    def __init__(self, *args, **kw):
        """Settings (all optional): eri_mv=3300, eos_mv=3000, brownout_mv=2800, hyst_mv=50,
        debounce=8, eri_days=90, shift=2, checked by pumpcore.settings.battery (ValueError
        if one is out of range)."""
        from pumpcore import settings

        (self.eri_mv, self.eos_mv, self.brownout_mv, self.hyst_mv, self.debounce,
         self.eri_days, self.shift) = settings.battery(*args, **kw)
        self.load((None, False, False, False, None, None, None, 0, 0, 0, 0, None, None))

    def load(self, st):
        """(acc, eri, eos, fault, eri_epoch_s, fault_epoch_s, fault_mv, n_below_eri,
        n_below_eos, n_above_eri, n_above_eos, last_mv, last_ms): a new monitor's, what
        pumpcore.batterystate.restore read from the state record, or the state after a
        sample (pumpcore.batterystate.sample). acc is the average * 2**shift, None until the
        first sample; the debounce counts are consecutive qualifying samples, capped at
        debounce; last_mv, last_ms the last sample (None: none yet)."""
        (self.acc, self.eri, self.eos, self.fault, self.eri_epoch_s, self.fault_epoch_s,
         self.fault_mv, self.n_below_eri, self.n_below_eos, self.n_above_eri, self.n_above_eos,
         self.last_mv, self.last_ms) = st

    # --- state ------------------------------------------------------------------------------

    @property
    def avg_mv(self):
        """The smoothed cell voltage, None before the first sample."""
        if self.acc is None:
            return None
        return self.acc >> self.shift

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
        if not self.eri:
            return None
        from pumpcore import batterystate

        return batterystate.eri_days_left(self, epoch_s)

    # --- input ------------------------------------------------------------------------------

    def sample(self, mv, now_ms, epoch_s):
        """Feed one raw ADC reading of the cell. Returns the flag changes (possibly []).
        A healthy cell's reading (no flag set, no count below a threshold started, the new
        average above both thresholds and their hysteresis) is taken here: what
        pumpcore.batterystate.sample does then, without loading it at every hourly sample
        (tests/board/test_battery.py compares the two)."""
        acc = self.acc
        n = self.debounce
        if (acc is not None and type(mv) is int and n > 0 and mv >= self.brownout_mv
                and not (self.eri or self.eos or self.fault or self.n_below_eri
                         or self.n_below_eos)):
            acc += mv - (acc >> self.shift)
            avg = acc >> self.shift
            h = self.hyst_mv
            if avg > self.eri_mv + h and avg > self.eos_mv + h:
                self.acc = acc
                self.last_mv = mv
                self.last_ms = now_ms
                self.n_above_eri = self.n_above_eri + 1 if self.n_above_eri < n else n
                self.n_above_eos = self.n_above_eos + 1 if self.n_above_eos < n else n
                return []
        from pumpcore import batterystate

        st, changes = batterystate.sample(self, mv, now_ms, epoch_s)
        self.load(st)
        return changes

    def settling(self):
        """True while a reading is on its way somewhere: the average still moving towards the
        last sample, or a debounce count started. The app then samples more often."""
        if self.last_mv is None or self.acc is None:
            return False
        if abs(self.last_mv - self.avg_mv) > self.hyst_mv:
            return True
        n = self.debounce
        for c in (self.n_below_eri, self.n_below_eos, self.n_above_eri, self.n_above_eos):
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
