"""The dose limiter's line of drug (pumpcore.limiter) beyond a segment's charge: the dead volume
a new plan declares (plan.set), a chunk merge, the limiter restored from the `count` record (power-on), when a held
delivery may start again, a pulse straddling two chunks. A per-call module (pumpcore.loader):
functions taking the Limiter or plain data, imported inside the functions that call them; it
imports nothing of pumpcore.limiter (no import circle).
"""

MAX_OFF_S = 400 * 86_400  # a longer time powered off is not plausible: counted as nothing


def on_plan(f, plan, pump_path_nl):
    """plan.set: the line of chunks `f` (Limiter.fifo) as the new plan declares it, returned
    (Limiter.allow takes it). The dead volume is pump path + catheter. A prime declares its
    volume empty at the tip; otherwise what the line holds stays (a new line: the plan's
    drug)."""
    conc = plan["conc_ng_ml"]
    dead = (pump_path_nl + plan["catheter_nl"]) * 1000
    st = plan["start"]
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
    return f


def wake(lim, w, lo, room, b, nb):
    """Board ms when the buckets that fall out leave `room` ng in window w (None: never)."""
    if room < 0:
        return None
    top = lim.top[w]
    s = lim.window_sum(w, lo)
    r = lim.d if w else lim.h
    while s > room and lo <= top:
        if lo > top - len(r):
            s -= r[lo % len(r)]
        lo += 1
    return (lo + nb) * b - lim.off_ms


def straddle(f, step_pl, conc_in):
    """The concentration a pulse straddling the chunk at the tip is charged at: the strongest
    it pushes out (the reservoir's, if it pushes out more than the line holds)."""
    conc = 0
    left = step_pl
    for i in range(0, len(f), 2):
        if f[i + 1] > conc:
            conc = f[i + 1]
        left -= f[i]
        if left <= 0:
            return conc
    return conc_in if conc_in > conc else conc


def merge(f):
    """One chunk too many: the two nearest the pump become one, at the stronger concentration."""
    f[-4] += f[-2]
    if f[-1] > f[-3]:
        f[-3] = f[-1]
    del f[-2:]


def restore(lim, count, now_ms, rtc_s):
    """Power-on: the state of a `count` record that the fresh Limiter `lim` takes (Limiter.load:
    fifo, h, d, top, uncertain_nl, off_ms, anchor, the segment in flight or None, its last
    µs). Its time resumes where the record left it, plus the time powered off by the RTC (if
    the board has one and its figure is plausible: after the record's, by at most MAX_OFF_S),
    rounded down; else plus nothing. The segment that was in flight (`fly_nl`) joins the
    uncertainty."""
    d = count.get("lim")
    lt = now_ms
    st = [lim.fifo, lim.h, lim.d, lim.top, lim.uncertain_nl, 0, None, None, 0]
    if d is not None:
        lt = d["t"]
        a = d["a"]
        if a is not None and rtc_s is not None and a[1] < rtc_s <= a[1] + MAX_OFF_S:
            est = a[0] + (rtc_s - a[1] - 1) * 1000
            if est > lt:
                lt = est
        # the segment in flight at the cut (y): counted whole, none of it after the boot
        st = [d["f"], d["h"], d["d"], d["top"], d["u"], 0, None, d["y"], lt * 1000]
    st[4] += count.get("fly_nl", 0)
    st[5] = lt - now_ms
    st[6] = None if rtc_s is None else [lt, rtc_s]
    return st
