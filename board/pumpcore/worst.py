"""The worst hour and the worst 24 hours of drug a plan can bring to the catheter tip.

Loaded by pumpcore.plan.validate for the check alone (a transient module: nothing of it stays in
the heap). Everything is an integer: rates in nL/day as the schedule runs them, times in ms,
and the drug in a window as "volume x ms" (nL/day x ms) times the plan's concentration, so a
figure compares with a cap in ng exactly.

The model (docs/plans.md, "Worst windows"): the plan is programmed at any clock time (x, the
local time of day at programming, is free). Its start (a bolus, or a prime whose first part
only pushes the empty pump path and catheter out of the tip) runs on [0, S); from S the basal
and the periodic boluses follow the local clock, a day-periodic pattern; a periodic bolus whose
slot began before S is not given (as pumpcore.schedule does). Step dosing is at its first step
next to the start (a window is at most a day, a step at least a day) and at its last step
afterwards (steps only go up); a window longer than a day that holds the start and may reach
the first step (the dose limiter's 24 h 30 min) takes the last step after the start too: an
upper bound, not exact, for such step plans. Patient boluses come on top of every window at their maximum:
lockout-spaced, at most max_24h in any 24 h (also in the first lockout after programming, where
the pump would refuse them: an upper bound); a window longer than a day holds a train whose
bolus max_24h + 1 comes a day after the first. Boluses are taken without the motor's
acceleration ramp (pumpcore.planning): the ramp only spreads the first 400 ms of a fast bolus.

The drug in a window [u, u+W) is piecewise linear in (u, x), linear inside each cell of the
lines "u or u+W at a start breakpoint", "S at a pattern breakpoint" and "u+W at a pattern
breakpoint". Its maximum is at a vertex of those lines: each vertex is evaluated, nothing is
sampled. Daylight-saving changes and clock.set are not part of this check: the run-time dose
limiter holds the caps whatever the clock does.
"""

from pumpcore import const

from .dose import bolus_rate_nl_day, ng_to_nl, step_dose_ng_day
from .limiter import D_MS, H_MS

DAY_MS = const(86_400_000)
HOUR_MS = const(3_600_000)
# The windows the run-time dose limiter (pumpcore.limiter) counts: an hour as the 31 two-minute
# buckets that hold it (62 min), a day as the 49 half-hour ones (24 h 30 min).
LIM_HOUR_MS = HOUR_MS + H_MS
LIM_DAY_MS = DAY_MS + D_MS
# The step volume when the check is not given the board's (an offline check without a board):
# the sim board's (board/boards/sim.json), so such a check counts in the steps of the
# reference rig; a board's own check always passes its calibrated step_pl (App.limits).
DEFAULT_STEP_PL = const(250_000)


def _bolus_ms(nl, rate):
    """How long the schedule runs a bolus of `nl` at `rate` (pumpcore.planning, no ramp)."""
    if nl <= 0 or rate <= 0:
        return 0
    d = (nl * DAY_MS + rate // 2) // rate
    return d if d > 0 else 1


class _Plan:
    """The plan as the pieces the windows are made of (plain integers and short lists)."""

    def __init__(self, plan, pump_path_nl):
        conc = plan["conc_ng_ml"]
        b = plan["basal"]
        kind = b["kind"]
        if kind == "flex":
            segs = [(s[0] * 60_000, ng_to_nl(s[1], conc)) for s in b["segments"]]
            self.seg_first = self.seg_last = segs
        elif kind == "stopped":
            self.seg_first = self.seg_last = [(0, plan["min_nl_day"])]
        elif kind == "step":
            self.seg_first = [(0, ng_to_nl(step_dose_ng_day(b, 0), conc))]
            self.seg_last = [(0, ng_to_nl(step_dose_ng_day(b, b["steps"]), conc))]
            self.step_ms = b["every_days"] * DAY_MS
        else:
            self.seg_first = self.seg_last = [(0, ng_to_nl(b["ng_day"], conc))]
        per = plan["periodic"]
        self.per_t = []
        self.per_ms = self.per_rate = 0
        if per is not None:
            nl = ng_to_nl(per["ng"], conc)
            self.per_ms = per["dur_s"] * 1000
            self.per_rate = bolus_rate_nl_day(nl, self.per_ms)
            self.per_t = [t * 60_000 for t in per["times_min"]]
        # the start: [0, S) at rate sr; the drug reaches the tip from `arrive` on
        self.S = self.arrive = self.sr = 0
        if kind != "step":
            self.step_ms = 0
        st = plan["start"]
        if st is not None:
            if st["kind"] == "bolus":
                nl = ng_to_nl(st["ng"], conc)
                self.sr = bolus_rate_nl_day(nl, st["dur_s"] * 1000)
            else:
                nl = st["pump_nl"] + st["catheter_nl"]
                self.sr = st["nl_min"] * 1440
            self.S = _bolus_ms(nl, self.sr)
            if self.S and st["kind"] == "prime":
                # what the prime declares empty, within what the path and the catheter hold;
                # the drug arrives when that much has left the tip (floor: never later)
                pump = st["pump_nl"]
                if pump_path_nl is not None and pump_path_nl < pump:
                    pump = pump_path_nl
                empty = pump + min(st["catheter_nl"], plan["catheter_nl"])
                a = empty * DAY_MS // self.sr
                self.arrive = a if a < self.S else self.S
        pat = plan["patient"]
        self.pat = None
        if pat is not None:
            nl = ng_to_nl(pat["ng"], conc)
            dur = pat["dur_s"] * 1000
            rate = bolus_rate_nl_day(nl, dur)
            self.pat = (rate, _bolus_ms(nl, rate), pat["lockout_s"] * 1000, pat["max_24h"])
        pts = [0]
        for seg in self.seg_first:
            pts.append(seg[0])
        for t in self.per_t:
            pts.append(t)
            pts.append((t + self.per_ms) % DAY_MS)
        pts.sort()
        self.points = [pts[k] for k in range(len(pts)) if k == 0 or pts[k] != pts[k - 1]]

    def pattern(self, segs):
        """The day's pattern (basal `segs` + periodic) as [pos, rate, cum from 0 to pos] lists
        over self.points and the day's total: the fast integral of the hot loops."""
        pos = self.points
        rate = []
        cum = []
        acc = 0
        for k in range(len(pos)):
            r = 0
            for seg in segs:
                if seg[0] <= pos[k]:
                    r = seg[1]
            for t in self.per_t:
                if (pos[k] - t) % DAY_MS < self.per_ms:
                    r += self.per_rate
            rate.append(r)
            cum.append(acc)
            acc += r * ((pos[k + 1] if k + 1 < len(pos) else DAY_MS) - pos[k])
        return (pos, rate, cum, acc)

    @staticmethod
    def to(pat, y):
        """Integral of pattern `pat` over [0, y), y any whole ms (pattern time)."""
        pos, rate, cum, total = pat
        q, r = divmod(y, DAY_MS)
        lo, hi = 0, len(pos) - 1
        while lo < hi:  # the last pos <= r (pos[0] is 0)
            mid = (lo + hi + 1) // 2
            if pos[mid] <= r:
                lo = mid
            else:
                hi = mid - 1
        return q * total + cum[lo] + rate[lo] * (r - pos[lo])

    def running_left(self, a):
        """ms left of the periodic bolus in progress at pattern time a (0: none)."""
        d = self.per_ms
        for t in self.per_t:
            r0 = (a - t) % DAY_MS
            if 0 < r0 < d:
                return d - r0
        return 0

    # ---- integrals over [0, y) of the pieces, in nL/day x ms ------------------------------
    def periodic(self, a, b, skip_running):
        """Periodic boluses in [a, b) (pattern time); skip_running: the one in progress at a
        is not given (its slot began before the basal started)."""
        d = self.per_ms
        n = 0
        for t in self.per_t:
            q1, r1 = divmod(b - t, DAY_MS)
            q0, r0 = divmod(a - t, DAY_MS)
            n += q1 * d + (r1 if r1 < d else d) - q0 * d - (r0 if r0 < d else d)
            if skip_running and 0 < r0 < d:
                left = d - r0
                n -= left if left < b - a else b - a
        return n * self.per_rate

    def start_to(self, t):
        """Drug volume x ms at the tip from the start, over [0, t)."""
        if t > self.S:
            t = self.S
        return self.sr * (t - self.arrive) if t > self.arrive else 0

    def patient(self, w):
        """The most patient boluses can add to a window of w ms."""
        if self.pat is None:
            return 0
        rate, dd, lock, n = self.pat
        if w > DAY_MS:
            # a window longer than a day (the limiter's 24 h 30 min) holds more than max_24h
            if dd > lock:  # overlapping pulses (rounding): a day's most and the rest's, a bound
                return self.patient(DAY_MS) + self.patient(w - DAY_MS)
            # the earliest train from the window's start: lockout-spaced, each one at least
            # a day after the one max_24h before it (what the pump lets through)
            ts = []
            v = 0
            t = 0
            while t < w:
                ts.append(t)
                v += rate * (w - t if w - t < dd else dd)
                t += lock
                if len(ts) >= n and ts[len(ts) - n] + DAY_MS > t:
                    t = ts[len(ts) - n] + DAY_MS
            return v
        one = rate * dd
        q, r = divmod(w, lock)
        if dd <= lock:
            v = q * one + rate * (r if r < dd else dd)
        else:  # rounding made a bolus a ms longer than the lockout: overlapping pulses
            v = q * one + min(one, 2 * rate * r)
        return v if v < n * one else n * one


def _steady(p, pat, w):
    """Windows after the start: the last basal step and every periodic bolus. -> (v, x)"""
    best = None
    for pt in p.points:
        for x in (pt, pt - w):
            v = p.to(pat, x + w) - p.to(pat, x)
            if best is None or v > best[0]:
                best = (v, x)
    return best


def _with_start(p, pat, w):
    """Windows that start before the basal does (u < S), at every vertex (u, x) of the lines
    in the module's docstring. -> (v, u, x)"""
    S = p.S
    per = p.per_rate
    best = None
    us = []
    for a in (0, p.arrive, S):
        for u in (a, a - w):
            if u <= S and u not in us:
                us.append(u)
    pts = p.points
    for u in us:
        st = p.start_to(u + w) - p.start_to(u if u > 0 else 0)
        if u + w <= S:
            if best is None or st > best[0]:
                best = (st, u, 0)
            continue
        L = u + w - S
        for pt in pts:
            for a in (pt, pt - L):  # S on a point, or the window's end on one
                a %= DAY_MS
                v = st + p.to(pat, a + L) - p.to(pat, a)
                left = p.running_left(a)
                v -= per * (left if left < L else L)
                if best is None or v > best[0]:
                    best = (v, u, a - S)
    # S on a pattern point and the window's end on another: L = u + w - S in [0, w]
    pos, rate, cum, total = pat
    n = len(pos)
    for j in range(n):
        pj = pos[j]
        left = p.running_left(pj)
        for k in range(n):
            L = pos[k] - pj
            v0 = cum[k] - cum[j]
            if L < 0:
                L += DAY_MS
                v0 += total
            while L <= w:  # every whole day more that fits too (a window may pass a day)
                u = S + L - w
                v = v0 + p.start_to(S) - p.start_to(u if u > 0 else 0)
                v -= per * (left if left < L else L)
                if best is None or v > best[0]:
                    best = (v, u, pj - S)
                L += DAY_MS
                v0 += total
    return best


def worst(plan, w_ms, pump_path_nl=None):
    """(total, start, basal, periodic, patient): the most drug a window of w_ms can hold, each
    in nL/day x ms at the plan's concentration (to_ng converts), with the share of each
    source in that window. pump_path_nl: the board's pump path (None: unknown, a prime's
    pump_nl is taken as the empty path it declares)."""
    p = _Plan(plan, pump_path_nl)
    v, x = _steady(p, p.pattern(p.seg_last), w_ms)
    st = 0
    per = p.periodic(x, x + w_ms, False)
    if p.S:
        s = _with_start(p, p.pattern(p.seg_first), w_ms)
        if p.step_ms and w_ms > p.step_ms:  # steps count from the basal start S
            # a window with the start that reaches the first step (the limiter's day is longer
            # than a day): its basal at the last step, an upper bound (steps only go up)
            s2 = _with_start(p, p.pattern(p.seg_last), w_ms)
            if s2[0] > s[0]:
                s = s2
        if s[0] > v:
            v, u, x = s
            st = p.start_to(u + w_ms) - p.start_to(u if u > 0 else 0)
            a = p.S + x
            L = u + w_ms - p.S
            per = p.periodic(a, a + L, True) if L > 0 else 0
    pat = p.patient(w_ms)
    return (v + pat, st, v - st - per, per, pat)


SOURCES = ("start", "basal", "periodic", "patient")


def check(plan, ctx):
    """The second stage of pumpcore.plan.validate: a drug that is not listed, then the plan's
    worst hour and 24 h within its caps, counted as the run-time dose limiter counts them (a
    plan that passes is never held by it): over its windows (LIM_HOUR_MS, LIM_DAY_MS), in
    whole pulses of ctx["step_pl"] each charged its ng rounded up, with one pulse ahead of the
    schedule (limiter_ng). Sets caps.ng_1h to caps.ng_24h when the plan gives none.
    -> None, or a dict (field, reason; for a cap also cap, window, worst_ng (as counted),
    cap_ng, parts (exact, per source), counted (how, in words); field is then the source with the largest share of
    the window) that plan.error turns into a PlanError."""
    conc = plan["conc_ng_ml"]
    caps = plan["caps"]
    if ctx.get("drugs") is not None:
        err = _custom(plan["drug"], plan.get("custom_drug"), caps, ctx["drugs"])
        if err is not None:
            return err
    path = ctx.get("pump_path_nl")
    step_pl = ctx.get("step_pl") or DEFAULT_STEP_PL
    hour = "ng_1h" in caps
    if not hour:
        # no per-hour cap stated: the daily cap bounds any hour too (the run-time limiter
        # enforces it; a default equal to the plan's exact worst hour would leave no room for
        # whole steps and would hold every such plan)
        caps["ng_1h"] = caps["ng_24h"]
    err = None
    # the cap the plan states is named first; a defaulted hour only after the day
    order = ((LIM_HOUR_MS, "ng_1h", "hour"), (LIM_DAY_MS, "ng_24h", "24 h"))
    for i in (0, 1):
        w_ms, key, name = order[i if hour else 1 - i]
        if err is None:
            err = _over(worst(plan, w_ms, path), conc, step_pl, caps[key], "caps." + key, name)
    return err


def limiter_ng(v, conc_ng_ml, step_pl):
    """The most the dose limiter can count for a window whose exact drug is v (nL/day x ms):
    the pulses of v in whole steps of step_pl, one more (delivery leads the schedule by up to
    one step, and a window holds a pulse more than its share), each charged at its ng rounded
    up as the limiter charges it."""
    pulses = v * 1000 // (DAY_MS * step_pl) + 1
    return pulses * ((step_pl * conc_ng_ml + 999_999_999) // 1_000_000_000)


def _custom(drug, custom, caps, drugs):
    near = near_drug(drug, drugs)
    if near is not None:
        return {"field": "drug", "reason": "unknown drug %r: did you mean %s?" % (drug, near)}
    for ch in drug:
        if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch in "-_ "):
            return {"field": "drug", "reason": "use lowercase letters, digits, space, - or _"}
    if not custom:
        return {"field": "drug", "reason": "%r is not a listed drug (%s): a custom drug needs "
                "custom_drug = true and both caps" % (drug, ", ".join(sorted(drugs)))}
    for k in ("ng_24h", "ng_1h"):
        if k not in caps:
            return {"field": "caps." + k, "reason": "is required for a drug without built-in limits"}
    return None


def near_drug(name, drugs):
    """The drug of `drugs` (the listed ones) that `name` is a near miss of, or None.

    Letters only, lowercased ('Baclofen ' and 'baclofen-2' are 'baclofen'), then: the same,
    one the start of the other (at least 4 letters: 'baclo', 'morphine sulfate'), or the same
    first letter and at most len // 4 edits apart ('morfine', 'ziconotide-x'). Simple on
    purpose: MicroPython has no difflib, and host and firmware refuse the same names. Distinct
    drugs stay possible as custom ones ('ropivacaine', 'levobupivacaine', 'hydrocodone').
    """
    key = ""
    for ch in name.lower():
        if "a" <= ch <= "z":
            key += ch
    if not key:
        return None
    for known in drugs:
        if key.startswith(known) or (len(key) >= 4 and known.startswith(key)):
            return known
        most = len(known) // 4
        if key[0] == known[0] and _edits(key, known, most) <= most:
            return known
    return None


def _edits(a, b, most):
    """Levenshtein distance of a and b, or most + 1 as soon as it is above `most`."""
    if abs(len(a) - len(b)) > most:
        return most + 1
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        low = i
        for j in range(1, len(b) + 1):
            c = prev[j - 1] + (a[i - 1] != b[j - 1])
            if prev[j] + 1 < c:
                c = prev[j] + 1
            if cur[j - 1] + 1 < c:
                c = cur[j - 1] + 1
            cur[j] = c
            if c < low:
                low = c
        if low > most:
            return most + 1
        prev = cur
    return prev[len(b)]


def _over(w, conc, step_pl, cap_ng, cap_field, window):
    counted = limiter_ng(w[0], conc, step_pl)
    if counted <= cap_ng:
        return None
    top = 1
    text = []
    parts = {}
    for i in range(1, 5):
        if w[i] > w[top]:
            top = i
        ng = to_ng(w[i], conc)
        parts[SOURCES[i - 1]] = ng
        if ng:
            text.append("%s %s" % (SOURCES[i - 1], mass_text(ng)))
    how = "counted over %s in whole steps of %s, one step ahead, as the dose limiter does" % (
        "24 h 30 min" if window == "24 h" else "62 min", mass_text(limiter_ng(0, conc, step_pl)))
    return {"field": SOURCES[top - 1], "cap": cap_field, "window": window,
            "worst_ng": counted, "cap_ng": cap_ng, "parts": parts, "counted": how,
            "reason": "the plan gives %s in the worst %s (%s; %s), above %s %s"
                      % (mass_text(counted), window, how, ", ".join(text), cap_field,
                         mass_text(cap_ng))}


def to_ng(v, conc_ng_ml):
    """nL/day x ms of drug at conc_ng_ml -> ng, rounded up (a figure never understates)."""
    return -(-v * conc_ng_ml // (1_000_000 * DAY_MS))


def above(v, conc_ng_ml, cap_ng):
    """True if v (nL/day x ms) of drug is more than cap_ng, exactly."""
    return v * conc_ng_ml > cap_ng * 1_000_000 * DAY_MS


def mass_text(ng):
    """ng in the unit a clinician reads: '50.083 mg', '16.667 mcg', '250 ng' (rounded up)."""
    if ng >= 1_000_000:
        unit, q = "mg", 1_000
    elif ng >= 1_000:
        unit, q = "mcg", 1
    else:
        return "%d ng" % ng
    whole, frac = divmod(-(-ng // q), 1_000)
    if not frac:
        return "%d %s" % (whole, unit)
    s = "%03d" % frac
    while s[-1] == "0":
        s = s[:-1]
    return "%d.%s %s" % (whole, s, unit)
