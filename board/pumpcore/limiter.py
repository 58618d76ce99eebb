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
31 two-minute buckets for the hour, 49 half-hour buckets for the day, two fixed rings of
integers (bucket j in slot j % size; `top` is the newest bucket). A window ending at any instant
of bucket j is counted as the whole of buckets j-N .. j (the 62 minutes, or 24 h 30 min, that
contain it): never less than the real window, more by at most one bucket. A plan that must
never be held therefore needs its worst 62 minutes and its worst 24 h 30 min, plus one step,
within its caps. The segment in flight (`fly`) goes into the rings when it ends (or stops), so
the rings hold only the past; at power-on its pulses count as made, none later than the boot.

Persisted with the delivery account (App.save_count, before every segment) as `lim`.
`uncertain_nl` bounds what the account counted but the motor may not have pulsed: the in-flight
segment of every power cut. What runs only at power-on and plan.set (restore, on_plan) is in
pumpcore.limitline, a transient module.
"""

from pumpcore import const

H_MS = const(120_000)  # the hour: 2-minute buckets
H_N = const(30)
D_MS = const(1_800_000)  # the day: half-hour buckets
D_N = const(48)
MAX_CHUNKS = const(6)


class Limiter:
    def __init__(self, now_ms=0, rtc_s=None):
        self.off_ms = 0
        self.anchor = None if rtc_s is None else [now_ms, rtc_s]  # [limiter ms, RTC s]
        self.fifo = []  # [volume_pl, conc_ng_ml, ...] from the tip to the pump
        self.h = [0] * (H_N + 1)
        self.d = [0] * (D_N + 1)
        self.top = [0, 0]  # the newest bucket of h and of d
        self.fly = None  # the segment in flight: [t_us, interval_us, pulses, ng each]
        self.uncertain_nl = 0
        # None, or why the last allow() was cut short by a cap: [window, ng counted, cap_ng,
        # board ms when one more pulse fits (None: never, or not held)]
        self.why = None
        self.held = False  # ... cut to nothing
        self._pend = None  # the last allow(), then the segment in flight, with the line before
        self._plan = None
        # the sum of each ring, kept up to date by _put (the hour's and the day's window at
        # the newest bucket: allow() reads it instead of adding up 31 or 49 buckets); valid
        # for the ring lists it was taken of (a restore assigns new lists)
        self._sum = [None, 0, None, 0]

    def load(self, st):
        """Power-on: the ledger pumpcore.limitline.restore read from the count record."""
        (self.fifo, self.h, self.d, self.top, self.uncertain_nl, self.off_ms, self.anchor, y,
         t) = st
        if y is not None:
            self.fold(y[0], y[1], y[2], y[3], t)

    def new_plan(self, plan, pump_path_nl):
        """plan.set: the line is declared anew (limitline.on_plan) before the next segment,
        when the code that programmed the plan has left the heap."""
        self._plan = (plan, pump_path_nl)

    def window_sum(self, w, lo):
        """ng in window w's buckets from lo to the newest (w: 0 the hour, 1 the day)."""
        r = self.d if w else self.h
        n = len(r)
        top = self.top[w]
        if lo <= top - n + 1:
            c = self._sum
            if c[2 * w] is not r:  # first use, or rings restored: add them up once
                t = 0
                for x in r:
                    t += x
                c[2 * w] = r
                c[2 * w + 1] = t
            return c[2 * w + 1]
        s = 0
        while lo <= top:
            s += r[lo % n]
            lo += 1
        return s

    def _put(self, w, j, ng):
        r = self.d if w else self.h
        n = len(r)
        top = self.top[w]
        c = self._sum
        i = 2 * w + 1
        if c[i - 1] is not r:
            c[i - 1] = None  # not the rings the sum was taken of: taken again when needed
        if j > top:
            if j - top < n:
                k = top + 1
                while k <= j:
                    c[i] -= r[k % n]
                    r[k % n] = 0
                    k += 1
            else:
                for k in range(n):
                    r[k] = 0
                c[i] = 0
            self.top[w] = top = j
        if j > top - n:
            r[j % n] += ng
            c[i] += ng

    def fold(self, t, iv, n, ngp, last_t):
        """Charge n pulses (pulse k at t + k * iv µs, none later than last_t) to both rings."""
        for w in (0, 1):
            bu = (D_MS if w else H_MS) * 1000
            k = 0
            while k < n:
                p = t + k * iv
                j = (p if p < last_t else last_t) // bu
                e = ((j + 1) * bu - 1 - t) // iv if iv and p < last_t else n
                if e >= n:
                    e = n - 1
                self._put(w, j, (e - k + 1) * ngp)
                k = e + 1

    def allow(self, now_ms, count, first_us, iv_us, step_pl, conc_in, caps):
        """How many of `count` pulses (a pulse after first_us, then every iv_us) may start now.
        Sets why and held; commit() then starts them."""
        if self._plan is not None:
            from pumpcore import limitline

            self.fifo = limitline.on_plan(self.fifo, self._plan[0], self._plan[1])
            self._plan = None
        t0 = now_ms + self.off_ms
        t = t0 * 1000 + first_us
        f = self.fifo
        n = count
        conc = conc_in
        if f:
            # pulses wholly inside the chunk at the tip; else one, at the strongest it touches
            if f[0] >= step_pl:
                conc = f[1]
                if f[0] // step_pl < n:
                    n = f[0] // step_pl
            else:
                from pumpcore import limitline

                n = 1
                conc = limitline.straddle(f, step_pl, conc_in)
        ngp = (step_pl * conc + 999_999_999) // 1_000_000_000
        self.why = None
        for w in (0, 1):
            b, nb = (D_MS, D_N) if w else (H_MS, H_N)
            self._put(w, t0 // b, 0)  # the ring moves up to now
            if caps is None or not ngp:
                continue
            cap = caps["ng_24h" if w else "ng_1h"]
            bu = b * 1000
            r = self.d if w else self.h
            top = self.top[w]
            lo = None
            k = 0  # pulses placed so far
            while k < n:
                j = (t + k * iv_us) // bu
                e = ((j + 1) * bu - 1 - t) // iv_us if iv_us else n
                if e >= n:
                    e = n - 1
                # the window of bucket j: the ring from j - nb (a running sum: the buckets
                # that fall out as j moves on are taken off), and the placed pulses from the
                # first at or after the start of bucket j - nb (no list of them)
                if lo is None:
                    lo = j - nb
                    rs = self.window_sum(w, lo)
                if j - nb > top:
                    rs = 0  # the whole ring has fallen out
                    lo = j - nb
                elif lo < j - nb:
                    if lo < top - nb:
                        lo = top - nb
                    while lo < j - nb:
                        rs -= r[lo % (nb + 1)]
                        lo += 1
                x = lo * bu - t
                kl = 0 if x <= 0 else (-(-x // iv_us) if iv_us else k)
                s = rs + (k - kl) * ngp if kl < k else rs
                room = (cap - s) // ngp if cap > s else 0
                if room <= e - k:
                    n = k + room
                    wake = None
                    if not n:
                        from pumpcore import limitline

                        wake = limitline.wake(self, w, j - nb, cap - ngp, b, nb)
                    self.why = ["24h" if w else "1h", s, cap, wake]
                    break
                k = e + 1
            if not n:
                break
        self.held = n == 0
        self._pend = [t, iv_us, n, ngp, step_pl, conc_in]
        return n

    def commit(self):
        """The pulses of the last allow() start: they are in flight, the line moves."""
        p = self._pend
        self.fly = p[:4]
        p.append(list(self.fifo))
        self._push(p[2] * p[4], p[5])

    def abort(self, made):
        """The segment in flight stopped after `made` pulses: only those are charged."""
        p = self._pend
        if self.fly is not None and made < p[2]:
            self.fifo = p[6]
            self._push(made * p[4], p[5])
            self.fly[2] = made
        self.settled()

    def settled(self):
        """The segment in flight is over: its pulses go into the rings."""
        y = self.fly
        if y is not None:
            self.fold(y[0], y[1], y[2], y[3], 1 << 62)
            self.fly = None
            self._pend = None

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
            from pumpcore import limitline

            limitline.merge(f)

    def to_dict(self, now_ms):
        return {"t": now_ms + self.off_ms, "a": self.anchor, "f": self.fifo, "h": self.h,
                "d": self.d, "top": self.top, "y": self.fly, "u": self.uncertain_nl}
