"""Delivery accounting: an ideal volume integrated exactly in integers, turned into motor segments.

`owed` is the ideal volume not yet covered by committed steps, in nL/day x µs (the product of a
rate in nL/day and a time in µs). One step is Q = 86_400_000 x step_pl of those units. The
engine integrates the schedule's piecewise-constant rate into `owed` with no rounding, so
delivered steps never drift from the plan: each step is timed at the microsecond where the ideal
volume crosses the next whole step, and the cumulative count stays within one step of the ideal
at every instant, over any length of time.

A segment is bounded (count <= max_steps, never past a rate change) and starts now: a pulse
after first_us, then count-1 more every interval_us. Within one constant-rate piece the
crossings are an arithmetic progression; first_us and interval_us are rounded down to the µs
(a pulse is never late) and the count is limited so the lead never exceeds MAX_DRIFT_US.
"""

from pumpcore import const

US_PER_DAY = const(86_400_000_000)
MAX_DRIFT_US = const(500)
LOOKAHEAD_MS = const(48 * 3_600_000)


class Delivery:
    def __init__(self, step_pl, t_ms=0, owed=0):
        self.step_pl = step_pl
        self.q = 86_400_000 * step_pl
        self.t_ms = t_ms
        self.owed = owed
        self.paused = False

    def set_step_pl(self, step_pl):
        """New calibration: the volume owed is kept, only its unit of steps changes."""
        self.step_pl = step_pl
        self.q = 86_400_000 * step_pl

    def advance(self, now_ms, sched):
        """Integrate the ideal rate from t_ms (paused: from now_ms) to now_ms."""
        t = self.t_ms
        if self.paused:
            self.paused = False
            t = now_ms
        while t < now_ms:
            nxt = sched.next_change_ms(t)
            end = now_ms if nxt is None or nxt > now_ms else nxt
            self.owed += sched.rate_nl_day(t) * (end - t) * 1000
            t = end
        self.t_ms = now_ms

    def rebase(self, now_ms, owed=None):
        """Board time restarted or therapy resumed: integrate nothing for the gap. `owed`: the
        volume owed from now on (the count record's at power-on, none for a bench run)."""
        self.t_ms = now_ms
        self.paused = False
        if owed is not None:
            self.owed = owed

    def pause(self, now_ms):
        """Nothing drives delivery from now_ms (reservoir empty with on_empty = stop, EOS, a
        stall, an occlusion, therapy stopped): the next advance() integrates from the instant
        it is called, however long after. The change that ends a pause may come with no
        wake-up before it (a refill, the battery sample that clears EOS): what the plan asked
        for meanwhile is never made up. Keeps at most one step owed."""
        self.t_ms = now_ms
        self.paused = True
        if self.owed > self.q:
            self.owed = self.q

    def drop_fraction(self):
        """Start a new plan with no volume owed from the old one (keeps at most one step)."""
        if self.owed > self.q:
            self.owed = self.q

    def due(self):
        """Whole steps owed now (normally 0: steps are timed at their crossings)."""
        return self.owed // self.q if self.owed > 0 else 0

    def commit(self, steps):
        self.owed -= steps * self.q

    def plan_segment(self, now_ms, sched, max_steps, catchup_us):
        """Next segment (count, first_us, interval_us) from now, or None.

        Call after advance(now_ms). Returns (segment, wake_ms): wake_ms is when to look again
        when there is no segment (the next rate change, or a look-ahead horizon).
        """
        if max_steps <= 0:
            nxt = sched.next_change_ms(now_ms)
            return None, nxt
        q = self.q
        due = self.due()
        if due > 0:
            n = due if due < max_steps else max_steps
            return (n, 0, catchup_us), None
        r = sched.rate_nl_day(now_ms)
        nxt = sched.next_change_ms(now_ms)
        if r <= 0:
            return None, nxt if nxt is not None else now_ms + LOOKAHEAD_MS
        need = q - self.owed  # > 0
        # Floors: every pulse lands on or just before its crossing, never after it, so the
        # count never lags the ideal by a whole step; the lead is under MAX_DRIFT_US.
        first_us = need // r
        span_us = (nxt - now_ms) * 1000 if nxt is not None else LOOKAHEAD_MS * 1000
        if first_us >= span_us:
            return None, nxt if nxt is not None else now_ms + LOOKAHEAD_MS
        # crossings k = 0.. at ceil((need + k*q)/r) while < span_us
        n = (span_us * r - need - 1) // q + 1  # number of crossings strictly before span end
        if n > max_steps:
            n = max_steps
        interval_us = q // r
        if n > 1:
            err = q - interval_us * r  # lead gained per step, in units of 1/r µs
            if err:
                lim = (MAX_DRIFT_US * r) // err + 1
                if n > lim:
                    n = lim
        if interval_us < 1:
            interval_us = 1
        return (n, first_us, interval_us), None


class ConstRate:
    """A constant rate source (minimum-rate fallback, bench runs)."""

    def __init__(self, nl_day):
        self.nl_day = nl_day

    def rate_nl_day(self, t_ms):
        return self.nl_day

    def next_change_ms(self, t_ms):
        return None
