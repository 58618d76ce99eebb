"""The dose limiter: a safety channel apart from the schedule.

It sees only what the motor is asked to do (a segment: pulses and their timing, the step volume,
the concentration in the reservoir) and the running plan's caps (`caps.ng_1h`, `caps.ng_24h`),
and says how many of the proposed pulses may start now without the drug *leaving the catheter
tip* in any rolling 60 minutes or 24 hours passing a cap. Whatever asked for the segment
(basal, start, bridge, periodic, patient, a bench run) makes no difference.

Dead volume. The pump path and the catheter (`pump_path_nl` of the board + the plan's
`catheter_nl`) are a FIFO of chunks [volume_pl, conc_ng_ml], tip first: a pulse pushes one step
of the reservoir's drug in at the pump and the oldest fluid out of the tip. A priming plan
declares its primed volume empty (conc 0), so a prime counts nothing until the tip is reached;
after a refill with a new concentration the bridge pushes out, and is counted at, the old one.
A segment is charged at the concentration of the chunk at the tip; one that would cross into
the next chunk stops at the boundary (a pulse straddling it is charged at the highest
concentration it touches). At most MAX_CHUNKS chunks: adjacent equal ones merge, and past the
bound the two nearest the pump merge at the higher concentration.

Windows. Time is board ms plus `off_ms` (the persisted time spent powered off, from the RTC
when there is one and it is plausible, else 0): it never goes backwards, whatever the wall
clock does. Charges (ng, rounded up per pulse) go into buckets by the exact time of each pulse:
1-minute buckets for the hour, 15-minute buckets for the day, kept as sparse ascending lists
[index, ng, index, ng, ...] (at most 61 and 97 pairs). A window ending at any instant of bucket j
is counted as the whole of buckets j-N .. j (the 61 minutes, or 24 h 15 min, that contain it):
never less than the real window, more by at most one bucket. A plan that must never be held
therefore needs its worst 61 minutes and its worst 24 h 15 min, plus one step, within its caps.

Persisted with the delivery account (App.save_count, before every segment) as `lim`; power-on
restores it with restore(). `uncertain_nl` bounds what the account counted but the motor may not
have pulsed: the in-flight segment of every power cut.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


H_MS = const(60_000)  # the hour: minute buckets
H_N = const(60)
D_MS = const(900_000)  # the day: quarter-hour buckets
D_N = const(96)
MAX_CHUNKS = const(6)
MAX_OFF_S = 400 * 86_400  # a longer time powered off is not plausible: counted as 0


def _add(lst, j, ng):
    """Add ng to bucket j of a sparse ascending [index, ng, ...] list."""
    i = len(lst) - 2
    while i >= 0 and lst[i] > j:
        i -= 2
    if i >= 0 and lst[i] == j:
        lst[i + 1] += ng
        if lst[i + 1] <= 0:
            del lst[i : i + 2]
    elif ng > 0:
        lst.insert(i + 2, ng)
        lst.insert(i + 2, j)


def _sum(lst, lo):
    """ng in the buckets from index lo on."""
    s = 0
    i = len(lst) - 2
    while i >= 0 and lst[i] >= lo:
        s += lst[i + 1]
        i -= 2
    return s


def _prune(lst, lo):
    """Forget the buckets before lo: no window from now on reaches them."""
    i = 0
    while i < len(lst) and lst[i] < lo:
        i += 2
    if i:
        del lst[:i]


def _groups(t_us, iv_us, k, count, b_ms):
    """(bucket, pulses) of pulses k..count-1, pulse k at t_us + k * iv_us."""
    bu = b_ms * 1000
    while k < count:
        j = (t_us + k * iv_us) // bu
        last = ((j + 1) * bu - 1 - t_us) // iv_us if iv_us else count
        if last >= count:
            last = count - 1
        yield j, last - k + 1
        k = last + 1


def _fit(lst, b_ms, nb, cap, ngp, t_us, iv_us, count):
    """(pulses that fit, ng of the window that refused the next one)."""
    new = []
    k = 0
    for j, n in _groups(t_us, iv_us, 0, count, b_ms):
        lo = j - nb
        s = _sum(lst, lo) + _sum(new, lo)
        room = (cap - s) // ngp if cap > s else 0
        if room < n:
            return k + room, s
        new.append(j)
        new.append(n * ngp)
        k += n
    return count, 0


def _wake(lst, b_ms, nb, cap, ngp, j):
    """Limiter ms from which one more pulse fits (None: never, a pulse is above the cap)."""
    if ngp > cap:
        return None
    rem = _sum(lst, j - nb)
    for i in range(0, len(lst), 2):
        if lst[i] >= j - nb:
            rem -= lst[i + 1]
            if rem + ngp <= cap:
                return (lst[i] + nb + 1) * b_ms
    return (j + 1) * b_ms


class Limiter:
    def __init__(self, now_ms=0, rtc_s=None):
        self.off_ms = 0
        self.anchor = None if rtc_s is None else [now_ms, rtc_s]  # [limiter ms, RTC s]
        self.fifo = []  # [volume_pl, conc_ng_ml, ...] from the tip to the pump
        self.h = []
        self.d = []
        self.uncertain_nl = 0
        self.capped = False  # the last allow() was cut short by a cap
        self.held = False  # ... to nothing
        self.why = None  # [window, ng, cap_ng] of the last refusal
        self.wake_ms = None  # board ms when a held delivery may start again
        self._pend = None
        self._fly = None

    def on_plan(self, plan, pump_path_nl):
        """plan.set: the dead volume is pump path + catheter. A prime declares its volume
        empty at the tip; otherwise what the line holds stays (a new line: the plan's drug)."""
        conc = plan["conc_ng_ml"]
        dead = (pump_path_nl + plan["catheter_nl"]) * 1000
        st = plan["start"]
        f = self.fifo
        if st is not None and st["kind"] == "prime":
            e = (st["pump_nl"] + st["catheter_nl"]) * 1000
            if e > dead:
                dead = e
            f = [e, 0]
            left = dead - e
        else:
            keep = []
            left = dead
            for i in range(0, len(f), 2):
                if left <= 0:
                    break
                v = f[i] if f[i] < left else left
                keep.append(v)
                keep.append(f[i + 1])
                left -= v
            f = keep
        if left > 0:
            if f and f[-1] == conc:
                f[-2] += left
            else:
                f.append(left)
                f.append(conc)
        self.fifo = f

    def allow(self, now_ms, count, first_us, iv_us, step_pl, conc_in, caps):
        """How many of `count` pulses (a pulse after first_us, then every iv_us) may start now.
        Sets capped/held/why/wake_ms; commit() charges them."""
        t0 = now_ms + self.off_ms
        _prune(self.h, t0 // H_MS - H_N)
        _prune(self.d, t0 // D_MS - D_N)
        t = t0 * 1000 + first_us
        f = self.fifo
        n = count
        conc = conc_in
        if f:
            if f[0] >= step_pl:
                conc = f[1]
                if f[0] // step_pl < n:
                    n = f[0] // step_pl
            else:
                n = 1
                conc = 0
                left = step_pl
                for i in range(0, len(f), 2):
                    if f[i + 1] > conc:
                        conc = f[i + 1]
                    left -= f[i]
                    if left <= 0:
                        break
                if left > 0 and conc_in > conc:
                    conc = conc_in
        ngp = (step_pl * conc + 999_999_999) // 1_000_000_000
        self.capped = False
        self.wake_ms = None
        if caps is not None and ngp:
            for lst, b, nb, cap, name in ((self.h, H_MS, H_N, caps["ng_1h"], "1h"),
                                          (self.d, D_MS, D_N, caps["ng_24h"], "24h")):
                m, s = _fit(lst, b, nb, cap, ngp, t, iv_us, n)
                if m < n:
                    n = m
                    self.capped = True
                    self.why = [name, s, cap]
                    if not m:
                        w = _wake(lst, b, nb, cap, ngp, t // (b * 1000))
                        self.wake_ms = None if w is None else w - self.off_ms
                        break
        self.held = n == 0
        self._pend = (t, iv_us, n, ngp, step_pl, conc_in)
        return n

    def commit(self):
        """The pulses of the last allow() are committed: charge them, move the FIFO."""
        p = self._pend
        self._fly = (p, list(self.fifo))
        self._charge(p[0], p[1], 0, p[2], p[3])
        self._push(p[2] * p[4], p[5])

    def abort(self, made):
        """The in-flight segment stopped after `made` pulses: give back the others."""
        fl = self._fly
        if fl is None:
            return
        t, iv, n, ngp, step_pl, cin = fl[0]
        if made < n:
            self._charge(t, iv, made, n, -ngp)
            self.fifo = fl[1]
            self._push(made * step_pl, cin)
        self._fly = None

    def settled(self):
        self._fly = None

    def _charge(self, t, iv, k, n, ngp):
        for lst, b in ((self.h, H_MS), (self.d, D_MS)):
            for j, c in _groups(t, iv, k, n, b):
                _add(lst, j, c * ngp)

    def _push(self, vol, conc):
        f = self.fifo
        if not f or vol <= 0:
            return
        total = 0
        for i in range(0, len(f), 2):
            total += f[i]
        left = vol
        while left > 0 and f:
            if f[0] > left:
                f[0] -= left
                left = 0
            else:
                left -= f[0]
                del f[0:2]
        if vol > total:
            vol = total
        if f and f[-1] == conc:
            f[-2] += vol
        else:
            f.append(vol)
            f.append(conc)
        if len(f) > 2 * MAX_CHUNKS:
            f[-4] += f[-2]
            if f[-1] > f[-3]:
                f[-3] = f[-1]
            del f[-2:]

    def window_ng(self, now_ms):
        """[ng in the hour, ng in the day] as the limiter counts them at now_ms."""
        t = now_ms + self.off_ms
        return [_sum(self.h, t // H_MS - H_N), _sum(self.d, t // D_MS - D_N)]

    def to_dict(self, now_ms):
        return {"t": now_ms + self.off_ms, "a": self.anchor, "f": self.fifo, "h": self.h,
                "d": self.d, "u": self.uncertain_nl}


def restore(count, now_ms, rtc_s):
    """The limiter of a `count` record at power-on. Its time resumes where the record left it,
    plus the time powered off by the RTC (if the board has one and its figure is plausible:
    after the record's, by at most MAX_OFF_S), rounded down; else plus nothing. The segment
    that was in flight (`fly_nl`) joins the uncertainty."""
    lim = Limiter()
    d = count.get("lim")
    lt = now_ms
    if d is not None:
        lt = d["t"]
        a = d["a"]
        if a is not None and rtc_s is not None and a[1] < rtc_s <= a[1] + MAX_OFF_S:
            est = a[0] + (rtc_s - a[1] - 1) * 1000
            if est > lt:
                lt = est
        lim.fifo = d["f"]
        lim.h = d["h"]
        lim.d = d["d"]
        lim.uncertain_nl = d["u"]
    lim.off_ms = lt - now_ms
    lim.anchor = None if rtc_s is None else [lt, rtc_s]
    lim.uncertain_nl += count.get("fly_nl", 0)
    return lim
