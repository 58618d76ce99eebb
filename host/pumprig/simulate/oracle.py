"""The ideal: what the plan should deliver, integrated exactly over world time, and how far the
pulses the world logged are from it (in steps). Written apart from the firmware's accounting:
it mirrors only what the host itself asked for."""

from __future__ import annotations

import bisect

from pumpcore import planning
from pumpcore.dose import ng_to_nl
from pumpcore.schedule import DAY_MS, Clock, Schedule, bolus_rate_nl_day

# The documented rule for periodic boluses (docs/plans.md, "Time of day and daylight saving"),
# written here apart from the firmware's code so that the ideal is not the firmware judging itself.
LATE_MAX_MS = 3_600_000


class PeriodicIdeal:
    """The periodic boluses of the ideal, as windows in world ms.

    Slot T of local day d starts at the first instant at which the clock shows day d at T or
    later. If the clock jumps over T (an offset change) by at most LATE_MAX_MS, the bolus starts
    at the jump, whole; by more, it is not given. Each (day, slot) once, so a repeated hour
    repeats nothing; none before the basal starts. The clock is the host's (epoch, offset, one
    pending change), which simulate sets again at every change with the same time; windows are
    generated a couple of local days ahead of the time asked for.
    """

    def __init__(self, per, clock, basal_start_ms, conc_at, from_ms):
        self.ng = per["ng"]
        self.dur = per["dur_s"] * 1000
        self.times = [tm * 60_000 for tm in per["times_min"]]
        self.clock = clock
        self.basal = basal_start_ms
        self.conc_at = conc_at  # world ms -> ng/mL (the bridge after a refill)
        self.starts = []  # sorted
        self.day = clock.local_ms(from_ms) // DAY_MS - 1  # next local day to generate

    def _first_at(self, target):
        """World ms at which the clock first shows local ms `target` or later (None: it
        jumped over it by more than LATE_MAX_MS)."""
        c = self.clock
        e0 = c.epoch_ms - c.base_ms  # epoch ms = world ms + e0
        t1 = target - c.offset_s * 1000 - e0
        change = c.next_change_epoch_s * 1000
        if not change or t1 + e0 < change:
            return t1
        tc = change - e0
        t2 = target - c.next_offset_s * 1000 - e0
        if t2 >= tc:
            return t2
        late = change + c.next_offset_s * 1000 - target  # what the clock shows after the jump
        return tc if late <= LATE_MAX_MS else None

    def _generate(self, t_ms):
        want = self.clock.local_ms(t_ms) // DAY_MS + 2
        while self.day <= want:
            for T in self.times:
                s = self._first_at(self.day * DAY_MS + T)
                if s is not None and s >= self.basal:
                    bisect.insort(self.starts, s)
            self.day += 1

    def _rate(self, s):
        """At the concentration of its start (the old one while a refill's bridge lasts)."""
        return bolus_rate_nl_day(ng_to_nl(self.ng, self.conc_at(s)), self.dur)

    def rate_nl_day(self, t_ms):
        self._generate(t_ms)
        r = 0
        j = bisect.bisect_right(self.starts, t_ms) - 1
        while j >= 0 and self.starts[j] > t_ms - self.dur:
            r += self._rate(self.starts[j])
            j -= 1
        return r

    def next_change_ms(self, t_ms):
        self._generate(t_ms)
        i = bisect.bisect_right(self.starts, t_ms)
        best = self.starts[i] if i < len(self.starts) else None
        j = i - 1
        while j >= 0 and self.starts[j] > t_ms - self.dur:
            e = self.starts[j] + self.dur
            if best is None or e < best:
                best = e
            j -= 1
        return best


class _Sched(Schedule):
    """The oracle's schedule: the firmware's Schedule with the refill bridge in world time.
    The firmware ends a bridge by the steps it pushed; the ideal pushes the line at the plan's
    own rates, so each old drug leaves the tip when the ideal volume has moved it out."""

    def __init__(self, plan, clock, program_ms, pullin_nl_day, state=None):
        super().__init__(plan, clock, program_ms, pullin_nl_day, state=state)
        self.tbridges: list = []  # [[conc_ng_ml, until_ms]], tip first

    def conc_at(self, t_ms):
        for conc, until in self.tbridges:
            if t_ms < until:
                return conc
        return self.plan["conc_ng_ml"]

    def activity(self, t_ms):
        if self.tbridges and t_ms < self.tbridges[-1][1] and not self.in_start(t_ms):
            return "bridge"
        return super().activity(t_ms)

    def next_change_ms(self, t_ms):
        best = super().next_change_ms(t_ms)
        for _conc, until in self.tbridges:
            if until > t_ms and (best is None or until < best):
                best = until
        return best


class Oracle:
    """The plan's ideal cumulative delivery, integrated exactly over world time.

    Mirrors only what the host itself asked for (plan, clock, accepted boluses, refills with a
    new concentration); the firmware's accounting plays no part. The basal, start, patient
    boluses and bridge come from pumpcore.schedule with the plan's periodic boluses left out;
    those come from PeriodicIdeal, the documented rule written apart.
    """

    def __init__(self, plan, program_ms, clock: Clock, step_pl: int, pullin_nl_day: int,
                 dead_nl: int):
        self.plan = plan
        self.clock = clock
        self.step_pl = step_pl
        self.pullin = pullin_nl_day
        self.dead_nl = dead_nl
        self.sched = _Sched(dict(plan, periodic=None), clock, program_ms, pullin_nl_day)
        self.periodic = None
        if plan.get("periodic"):
            self.periodic = PeriodicIdeal(plan["periodic"], clock, self.sched.basal_start_ms,
                                          self._conc_at, program_ms)
        self.t_ms = program_ms
        self.acc = 0  # nL/day x ms
        self.stopped_from = None  # world ms after which the ideal is no longer defined

    def _conc_at(self, t_ms):
        return self.sched.conc_at(t_ms)

    def rate_nl_day(self, t_ms):
        r = self.sched.rate_nl_day(t_ms)
        if self.periodic is not None:
            r += self.periodic.rate_nl_day(t_ms)
        return r

    def next_change_ms(self, t_ms):
        a = self.sched.next_change_ms(t_ms)
        if self.periodic is not None:
            b = self.periodic.next_change_ms(t_ms)
            if a is None or (b is not None and b < a):
                return b
        return a

    def advance(self, t_ms):
        t = self.t_ms
        while t < t_ms:
            nxt = self.next_change_ms(t)
            e = t_ms if nxt is None or nxt > t_ms else nxt
            self.acc += self.rate_nl_day(t) * (e - t)
            t = e
        self.t_ms = max(self.t_ms, t_ms)

    def acc_us(self, t_us):
        """Ideal volume in nL/day x µs at t_us (>= the oracle's integrated time)."""
        t_ms = t_us // 1000
        self.advance(t_ms)
        return self.acc * 1000 + self.rate_nl_day(t_ms) * (t_us - t_ms * 1000)

    def add_bolus(self, t_ms, nl, dur_ms):
        self.advance(t_ms)
        self.sched.prune(t_ms)
        planning.add_bolus(self.sched, t_ms, nl, dur_ms)

    def refill(self, t_ms, conc):
        if conc is None or conc == self.plan["conc_ng_ml"]:
            return
        self.advance(t_ms)
        old = self.plan["conc_ng_ml"]
        # the line from the tip: what is left of the drugs still bridged, then the old drug
        parts = []
        left = self.dead_nl
        t = t_ms
        for c, until in self.sched.tbridges:
            if until > t:
                nl = min(self._volume_nl(t, until), left)
                parts.append((c, nl))
                left -= nl
                t = until
        if left > 0:
            parts.append((old, left))
        sd = self.sched.to_dict()
        self.plan = dict(self.plan, conc_ng_ml=conc)
        plan = dict(self.plan, periodic=None)
        self.sched = _Sched(plan, self.clock, 0, self.pullin, planning.state(plan, sd, 0))
        if not self.dead_nl:
            return
        done: list = []
        t = t_ms
        for c, nl in parts:
            self.sched.tbridges = done + [[c, 1 << 62]]
            t = self._pushed_by(t, nl)
            done.append([c, t])
        self.sched.tbridges = done

    def _volume_nl(self, t0, t1):
        """nL the ideal pushes from t0 to t1."""
        acc = 0
        t = t0
        while t < t1:
            nxt = self.next_change_ms(t)
            e = t1 if nxt is None or nxt > t1 else nxt
            acc += self.rate_nl_day(t) * (e - t)
            t = e
        return acc // DAY_MS

    def _pushed_by(self, t, nl):
        """World ms at which the ideal has pushed `nl` from t."""
        need = nl * DAY_MS
        for _ in range(100_000):
            r = self.rate_nl_day(t)
            nxt = self.next_change_ms(t)
            span = (nxt - t) if nxt is not None else DAY_MS * 400
            if r > 0 and r * span >= need:
                return t + (need + r - 1) // r
            need -= r * span
            t += span
        return t

    def ideal_nl(self, t_ms):
        self.advance(t_ms)
        return self.acc // DAY_MS


class StepError:
    """Largest |measured steps - ideal steps| over every pulse instant of the world's log.

    Segments are fed as the world logs them; pulses are taken in time order up to a horizon,
    so a segment running past the end of a simulated day is finished the next day."""

    def __init__(self, oracle: Oracle, step_pl: int):
        self.o = oracle
        self.q = 86_400_000 * step_pl  # nL/day x µs per step
        self.steps = 0
        self.worst = 0  # in nL/day x µs
        self.worst_at_us = None
        self.pending = []  # [segment, next pulse index], in start order
        self.done_index = -1  # segments up to this index are fully checked

    def add(self, seg: dict):
        """A segment from the world's log; a newer copy of a pending one (it was aborted
        since, so `made` is now known) replaces it and keeps the position reached."""
        for p in self.pending:
            if p[0]["index"] == seg["index"]:
                p[0] = seg
                return
        if seg["index"] <= self.done_index:
            return  # fetched again but already checked to its end
        self.pending.append([seg, 0])

    def run_until(self, until_us: int):
        while self.pending:
            seg, i = self.pending[0]
            n = seg["made"] if seg["made"] is not None else seg["count"]
            base = seg["start_us"] + seg["first_us"]
            iv = seg["interval_us"]
            while i < n:
                t = base + i * iv
                if t > until_us:
                    self.pending[0][1] = i
                    return
                # pulses i..j-1 (up to the horizon) at one constant ideal rate: the error is
                # linear in the pulse index, so its extremes are at the first and last pulse
                j = n if iv == 0 else min(n, (until_us - base) // iv + 1)
                last_t = base + (j - 1) * iv
                nxt = self.o.next_change_ms(t // 1000)
                if j - i > 2 and (nxt is None or nxt * 1000 > last_t + 1000):
                    self._check(t, self.steps)
                    self._check(last_t, self.steps + (j - 1 - i))
                    self.steps += j - i
                    i = j
                    continue
                self._check(t, self.steps)
                self.steps += 1
                i += 1
            self.done_index = self.pending.pop(0)[0]["index"]

    def _check(self, t, k):
        """The k-th pulse (0-based count before it) happens at t µs."""
        a = self.o.acc_us(t)
        lag = a - k * self.q  # just before the pulse
        lead = (k + 1) * self.q - a  # just after it
        if lag > self.worst:
            self.worst, self.worst_at_us = lag, t
        if lead > self.worst:
            self.worst, self.worst_at_us = lead, t

    def check_lag(self, t_us: int):
        """No pulse at t: the count must still be within a step of the ideal."""
        lag = self.o.acc_us(t_us) - self.steps * self.q
        if lag > self.worst:
            self.worst, self.worst_at_us = lag, t_us

    def value(self) -> float:
        return round(self.worst / self.q, 4)
