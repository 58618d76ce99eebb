"""The plan as a piecewise-constant volume rate over board time.

`Schedule.rate_nl_day(t_ms)` is the plan's ideal rate at t and `next_change_ms(t_ms)` the next
instant it may change. The delivery engine integrates it exactly; the host's simulation oracle
integrates the same function independently of the firmware's account.

Time of day comes from `Clock`: board ms -> UTC epoch ms -> local time with a UTC offset. The
pump follows its clock: a flex segment or a periodic bolus starts when the *local* clock shows
its time. At a daylight-saving change (a new offset at a given UTC instant, set by
`clock.set`), local time jumps: spring forward skips that hour of the flex schedule, fall back
repeats it. Delivery never jumps: the rate simply follows the clock.

Periodic boluses are the exception: a dose must never repeat because the clock went back. Each
slot (a clock time of the plan) keeps the local day it was last started (`slot_day`, persisted),
and a bolus is started at most once per slot and local day, whatever the clock does. Once it
has started, a bolus runs from its start in board time (`slot_ms`), so a clock change cannot
shorten or replay it. `settle(t)` records the slots the clock reached; the
owner calls it after integrating up to t and before and after every clock change. Until then a
slot whose start the clock ran through is counted by `_periodic` as if it had been recorded, so
the rate stays a function of time for the integration. A slot the clock jumped over (spring
forward, `clock.set` forwards, an RTC after a power cut) is given late, whole, when it was
jumped over by at most an hour, else skipped; the events say which (pumpcore.slots).

What runs only at boot, plan.set, refill or a patient bolus (compiling the plan's start, bolus
windows, the refill bridge, the state from a record across a refill or a reset) is in
pumpcore.planning, a per-call module (pumpcore.loader) that its callers import: Schedule() for
a plan with a start, and pumpcore.program, .patient and .restore. Its functions return plain
data, which the Schedule assigns to its own fields (its constructor's `state`).
"""

from pumpcore import const

from . import dose
from .dose import bolus_rate_nl_day  # noqa: F401  (also for the host, as before)

DAY_MS = const(86_400_000)


class Clock:
    """Board ms -> wall clock. `set` records which epoch ms a board ms corresponds to."""

    def __init__(self, epoch_ms=0, base_ms=0, offset_s=0, next_change_epoch_s=0, next_offset_s=0,
                 valid=False):
        self.epoch_ms = epoch_ms
        self.base_ms = base_ms
        self.offset_s = offset_s
        self.next_change_epoch_s = next_change_epoch_s
        self.next_offset_s = next_offset_s
        self.valid = valid

    def set(self, now_ms, epoch_s, offset_s, next_change_epoch_s=0, next_offset_s=0):
        self.epoch_ms = epoch_s * 1000
        self.base_ms = now_ms
        self.offset_s = offset_s
        self.next_change_epoch_s = next_change_epoch_s or 0
        self.next_offset_s = next_offset_s or 0
        self.valid = True

    def rebase(self, now_ms, epoch_s=None):
        """After a reset: board ms restarted. Keep the wall clock (from an RTC if given)."""
        if epoch_s is not None:
            self.epoch_ms = epoch_s * 1000
        self.base_ms = now_ms

    def epoch_ms_at(self, t_ms):
        return self.epoch_ms + (t_ms - self.base_ms)

    def epoch_s(self, t_ms):
        return self.epoch_ms_at(t_ms) // 1000

    def offset_ms_at(self, epoch_ms):
        if self.next_change_epoch_s and epoch_ms >= self.next_change_epoch_s * 1000:
            return self.next_offset_s * 1000
        return self.offset_s * 1000

    def local_ms(self, t_ms):
        e = self.epoch_ms_at(t_ms)
        return e + self.offset_ms_at(e)

    def next_offset_change_ms(self, t_ms):
        """Board ms of the pending offset change, if it is after t."""
        if not self.next_change_epoch_s:
            return None
        t = self.base_ms + (self.next_change_epoch_s * 1000 - self.epoch_ms)
        return t if t > t_ms else None

    def steady_from_ms(self, t_ms):
        """The first board ms from which local time ran without a jump up to t: the last
        `set` or `rebase`, or the offset change if it came after and is not after t."""
        lo = self.base_ms
        if self.next_change_epoch_s:
            c = lo + (self.next_change_epoch_s * 1000 - self.epoch_ms)
            if c <= t_ms:
                lo = c
        return lo

    def to_dict(self):
        return {"epoch_ms": self.epoch_ms, "base_ms": self.base_ms, "offset_s": self.offset_s,
                "next_change_epoch_s": self.next_change_epoch_s,
                "next_offset_s": self.next_offset_s, "valid": self.valid}

    @classmethod
    def from_dict(cls, d):
        return cls(d["epoch_ms"], d["base_ms"], d["offset_s"], d["next_change_epoch_s"],
                   d["next_offset_s"], d["valid"])


class Schedule:
    """The ideal rate of a plan programmed at `program_ms`.

    overlays: patient-bolus windows [(start_ms, end_ms, rate_nl_day)] added on top of basal.
    bridges: [[conc_ng_ml, end_steps]], tip first, after refills with new concentrations: the
    old drugs still in the pump path and catheter, each dosed at its own strength until the
    account's steps (`steps`, kept current by the owner) reach its end: by volume pushed, not
    by time, so stops, holds and boluses cannot end a bridge early or late.
    """

    def __init__(self, plan, clock, program_ms, pullin_nl_day=0, steps=0, bridges=None,
                 state=None):
        """A plan programmed at program_ms (its start compiled by pumpcore.planning), or with
        `state` the Schedule's state from its record (pumpcore.planning.state): program_ms,
        basal_start_ms, start_windows, overlays, bridges, slot_day (per periodic slot: the
        local day it was last started), slot_ms (per periodic slot: board ms its last bolus
        started, None: none), seen_ms (the last settle())."""
        self.plan = plan
        self.clock = clock
        self.pullin_nl_day = pullin_nl_day
        self.steps = steps  # the account's committed steps (App keeps it current)
        self.due_ms = 0  # settle() has nothing to do before this (unless the clock is set)
        if state is None:
            wins = []
            basal = program_ms
            if plan and plan["start"] is not None:
                from pumpcore import planning

                wins, basal = planning.compile_start(plan, program_ms, pullin_nl_day)
            state = (program_ms, basal, wins, [], [] if bridges is None else bridges, None, None,
                     program_ms)
        (self.program_ms, self.basal_start_ms, self.start_windows, self.overlays, self.bridges,
         self.slot_day, self.slot_ms, self.seen_ms) = state

    # --- pieces -------------------------------------------------------------------------
    def conc_at(self, t_ms):
        """The concentration at the catheter tip (t_ms: the caller's time; the tip moves with
        the steps pushed, not with time)."""
        for conc, end in self.bridges:
            if self.steps < end:
                return conc
        return self.plan["conc_ng_ml"]

    def bridge_steps(self):
        """Steps until the next drug reaches the tip (0: no bridge)."""
        for _c, end in self.bridges:
            if self.steps < end:
                return end - self.steps
        return 0

    def in_start(self, t_ms):
        return t_ms < self.basal_start_ms

    def activity(self, t_ms):
        p = self.plan
        if p is None:
            return "none"
        if self.in_start(t_ms):
            return p["start"]["kind"]
        if self.bridges and self.steps < self.bridges[-1][1]:
            return "bridge"
        return p["basal"]["kind"]

    def basal_ng_day(self, t_ms):
        b = self.plan["basal"]
        kind = b["kind"]
        if kind == "continuous":
            return b["ng_day"]
        if kind == "flex":
            minute = (self.clock.local_ms(t_ms) % DAY_MS) // 60_000
            rate = 0
            for seg in b["segments"]:
                if seg[0] <= minute:
                    rate = seg[1]
                else:
                    break
            return rate
        if kind == "step":
            idx = (t_ms - self.basal_start_ms) // (b["every_days"] * DAY_MS)
            return dose.step_dose_ng_day(b, idx)
        return 0

    def basal_nl_day(self, t_ms):
        p = self.plan
        if p["basal"]["kind"] == "stopped":
            return p["min_nl_day"]
        return dose.ng_to_nl(self.basal_ng_day(t_ms), self.conc_at(t_ms))

    def slot_rate_nl_day(self, start_ms):
        """The rate of a periodic bolus started at start_ms (its concentration then)."""
        per = self.plan["periodic"]
        dur = per["dur_s"] * 1000
        return bolus_rate_nl_day(dose.ng_to_nl(per["ng"], self.conc_at(start_ms)), dur)

    def _periodic(self, t_ms):
        """(rate_nl_day of the periodic boluses at t, ms until the next periodic start/end).

        A bolus settle() recorded runs in board time from its start (slot_ms), whatever the
        clock does since; one the clock has reached but settle() has not recorded yet counts
        from its start on the clock, if the clock ran through that start without a jump."""
        per = self.plan["periodic"]
        if per is None:
            return 0, None
        days = self.slot_day  # None until the first settle(): nothing recorded yet
        dur = per["dur_s"] * 1000
        local = self.clock.local_ms(t_ms)
        day_ms = local % DAY_MS
        rate = 0
        nxt = None
        lo = None
        i = 0
        for tm in per["times_min"]:
            m = self.slot_ms[i] if days is not None else None
            if m is not None and m <= t_ms < m + dur:
                rate += self.slot_rate_nl_day(m)
                if nxt is None or m + dur - t_ms < nxt:
                    nxt = m + dur - t_ms
            T = tm * 60_000
            since = (day_ms - T) % DAY_MS
            if since < dur and (days is None or (local - since) // DAY_MS > days[i]):
                if lo is None:
                    # not after a jump of the clock, nor in the plan's start phase
                    lo = self.clock.steady_from_ms(t_ms)
                    if lo < self.basal_start_ms:
                        lo = self.basal_start_ms
                if t_ms - since >= lo:
                    rate += self.slot_rate_nl_day(t_ms - since)
                    if nxt is None or dur - since < nxt:
                        nxt = dur - since
            to_start = (T - day_ms) % DAY_MS or DAY_MS
            if nxt is None or to_start < nxt:
                nxt = to_start
            i += 1
        return rate, nxt

    def settle(self, t_ms):
        """Record the periodic slots the clock has reached by t (integrated up to t with this
        clock): their local day and, if given, their start in board ms. Returns None when
        nothing changed, else the events [(kind, data)] to log (may be empty). The owner
        persists slots() before the next motor segment (the count record), so a power cut
        cannot give a slot again. The work is in pumpcore.slots (transient)."""
        if self.plan is None or self.plan["periodic"] is None:
            return None
        if self.slot_day is not None and t_ms < self.due_ms and \
                self.clock.base_ms < self.seen_ms:
            return None  # no slot start since the last look, and the clock was not set
        from pumpcore import slots

        self.slot_day, self.slot_ms, self.seen_ms, self.due_ms, out = slots.settle(self, t_ms)
        return out

    def slots(self):
        """What settle() recorded, as plain data for a record (None: no periodic boluses)."""
        if self.slot_day is None:
            return None
        return [self.slot_day, self.slot_ms, self.seen_ms]

    def rate_nl_day(self, t_ms):
        if self.plan is None:
            return 0
        if t_ms < self.program_ms:
            return 0
        if self.in_start(t_ms):
            for s, e, r in self.start_windows:
                if s <= t_ms < e:
                    return r
            return 0
        rate = self.basal_nl_day(t_ms)
        rate += self._periodic(t_ms)[0]
        for s, e, r in self.overlays:
            if s <= t_ms < e:
                rate += r
        return rate

    def next_change_ms(self, t_ms):
        """The first instant after t at which the rate may change (None: never)."""
        if self.plan is None:
            return None
        cands = []
        if t_ms < self.program_ms:
            return self.program_ms
        if self.in_start(t_ms):
            for _s, e, _r in self.start_windows:
                if e > t_ms:
                    return e
        b = self.plan["basal"]
        if b["kind"] == "flex":
            local = self.clock.local_ms(t_ms)
            day_ms = local % DAY_MS
            best = DAY_MS - day_ms
            for seg in b["segments"]:
                d = seg[0] * 60_000 - day_ms
                if 0 < d < best:
                    best = d
            cands.append(t_ms + best)
        elif b["kind"] == "step":
            period = b["every_days"] * DAY_MS
            idx = (t_ms - self.basal_start_ms) // period
            if idx < b["steps"]:
                cands.append(self.basal_start_ms + (idx + 1) * period)
        _, nxt = self._periodic(t_ms)
        if nxt is not None:
            cands.append(t_ms + nxt)
        for s, e, _ in self.overlays:
            if s > t_ms:
                cands.append(s)
            if e > t_ms:
                cands.append(e)
        if b["kind"] == "flex" or self.plan["periodic"] is not None:
            c = self.clock.next_offset_change_ms(t_ms)
            if c is not None:
                cands.append(c)
        best = None
        for c in cands:
            if c > t_ms and (best is None or c < best):
                best = c
        return best

    # --- state that changes after programming ---------------------------------------------
    def prune(self, t_ms):
        if self.overlays and self.overlays[0][1] <= t_ms:
            self.overlays = [w for w in self.overlays if w[1] > t_ms]

    def to_dict(self):
        return {
            "program_ms": self.program_ms, "basal_start_ms": self.basal_start_ms,
            "start_windows": [list(w) for w in self.start_windows],
            "overlays": [list(w) for w in self.overlays],
            "bridges": self.bridges,
            "slots": self.slots(),
        }
