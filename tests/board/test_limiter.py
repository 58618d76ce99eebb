"""The dose limiter (pumpcore.limiter) on its own and in the App on a fake board (issue 11).

Runs under CPython and MicroPython. What reached the patient is worked out from the pulses the
fake board's motor made (their exact times) and the concentration each pulse pushed out of the
catheter tip, never from the app's account or the limiter's own ledger.
"""

from _util import rmtree, tmpdir
from fakeboard import FakeBoard, run_until
from pumpcore import evlog, limitline, program
from pumpcore import limiter as limmod
from pumpcore.app import App


def window_ng(lim, now_ms):
    """[ng in the hour, ng in the day] as the limiter counts them at now_ms."""
    t = now_ms + lim.off_ms
    out = []
    for w in (0, 1):
        b, nb = (limmod.D_MS, limmod.D_N) if w else (limmod.H_MS, limmod.H_N)
        s = lim.window_sum(w, t // b - nb)
        y = lim.fly  # the segment in flight counts whole
        if y is not None:
            s += y[2] * y[3]
        out.append(s)
    return out

MIN = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
EPOCH = 1_800_000_000
NG_PER_STEP = 2500  # 0.25 µL at 10 mg/mL


def _plan(**kw):
    """A canonical (normalised) plan built by hand: what plan.validate would return, but not
    checked by it, as if a plan slipped past the rules."""
    p = {"v": 1, "drug": "morphine", "conc_ng_ml": 10_000_000,
         "basal": {"kind": "continuous", "ng_day": 2_000_000}, "min_nl_day": 0,
         "catheter_nl": 0, "start": None, "periodic": None, "patient": None,
         "reservoir": {"low_nl": 2_000_000, "empty_nl": 1_000_000, "on_empty": "stop",
                       "refill_by_days": 0},
         "caps": {"ng_24h": 3_000_000, "ng_1h": 500_000}}
    p.update(kw)
    return p


# finding 1: 50 mg over 1 h at the start, caps 3 mg/24 h and 0.5 mg/h
F1 = _plan(start={"kind": "bolus", "ng": 50_000_000, "dur_s": 3600})
# finding 2: twelve periodic boluses of 0.4 mg one minute apart, under 0.5 mg/h
F2 = _plan(periodic={"times_min": list(range(480, 492)), "ng": 400_000, "dur_s": 60},
           caps={"ng_24h": 10_000_000, "ng_1h": 500_000})


class LogBoard(FakeBoard):
    """A fake board that keeps every segment it was given: [start_us, pulses, first, interval]."""

    def __init__(self, root, rtc=None):
        super().__init__(root=root)
        self.log = []
        self.rtc = rtc

    def motor_start(self, count, first_us, interval_us, forward):
        super().motor_start(count, first_us, interval_us, forward)
        self.log.append([self.t_ms * 1000, count, first_us, interval_us])

    def motor_stop(self):
        live = self.seg is not None
        n = super().motor_stop()
        if live:
            self.log[-1][1] = n
        return n


def _pulse_times(b, until_ms, base_us=0):
    """The times (µs) of the pulses board b made up to until_ms, in order (a generator: a long
    run has too many to keep in a small heap)."""
    for start, count, first, iv in b.log:
        for k in range(count):
            t = start + first + k * iv
            if t > until_ms * 1000:
                return
            yield base_us + t


def _chain(*gens):
    for g in gens:
        for t in g:
            yield t


def _count(times, lo_us, hi_us):
    return sum(1 for t in times if lo_us < t <= hi_us)


def _max_in_window(pulses, w_us, ngf=None):
    """The most ng (ngf(i) for pulse i, NG_PER_STEP if None) in any window (t - w, t] of the
    pulses `pulses()` generates: two passes over them, one at each end of the window, and
    no list of them (a small heap)."""
    best = 0
    acc = 0
    tail = pulses()
    j = 0
    t_tail = next(tail, None)
    for i, t in enumerate(pulses()):
        acc += ngf(i) if ngf else NG_PER_STEP
        while t_tail is not None and t_tail <= t - w_us:
            acc -= ngf(j) if ngf else NG_PER_STEP
            j += 1
            t_tail = next(tail, None)
        if acc > best:
            best = acc
    return best


def _app(root, rtc=None):
    b = LogBoard(root + "/", rtc)
    return App(b, keys={}), b


def _set(app, plan, now=0):
    """Program a plan past the plan rules (program.plan_set takes a checked plan)."""
    app.call("clock.set", {"epoch_s": EPOCH, "offset_s": 0}, "clinician", "c", now)
    app.call("refill", {"volume_nl": 20_000_000}, "clinician", "f", now)
    program.plan_set(app, {"plan": plan}, now, "p")


def _events(app, kind):
    return [e for e in evlog.events(app.events) if e["kind"] == kind]


def test_finding1_start_bolus_held_at_the_caps_and_resumed():
    """Finding 1: a start bolus of 50 mg over 1 h under caps of 3 mg/24 h and 0.5 mg/h (a plan
    the rules let through) is held by the limiter: the pulses the motor made stay within both
    rolling windows, CAP_REACHED is raised with its figures, and delivery resumes when the
    24-h window allows (the basal, not the dropped bolus)."""
    root = tmpdir()
    try:
        app, b = _app(root)
        _set(app, F1)
        run_until(app, b, 2 * HOUR)
        assert "CAP_REACHED" in app.alarms.active()
        ev = _events(app, "cap.reached")
        assert ev and ev[0]["data"]["window"] == "1h" and ev[0]["data"]["cap_ng"] == 500_000
        run_until(app, b, 60 * HOUR)
        assert _max_in_window(lambda: _pulse_times(b, b.t_ms), HOUR * 1000) <= 500_000
        assert _max_in_window(lambda: _pulse_times(b, b.t_ms), DAY * 1000) <= 3_000_000
        # without the limiter: 20 000 steps (50 mg) in the first hour
        assert _count(_pulse_times(b, b.t_ms), -1, HOUR * 1000) <= 200
        # held once the day's 3 mg were out, then resumed: the basal runs on day 3
        assert _count(_pulse_times(b, b.t_ms), 48 * HOUR * 1000, 60 * HOUR * 1000) >= 300
        assert not app.alarms.condition_active("CAP_REACHED")
        assert "CAP_REACHED" in app.alarms.active()  # latched until a clinician acks it
        # what the schedule owed while held was dropped: no catch-up beyond the caps either
        assert app.call("status", {}, "clinician", "s", b.t_ms)["delivered_steps"] == b.pulses_at(b.t_ms)
    finally:
        rmtree(root)


def test_finding2_periodic_burst_held_under_the_hourly_cap():
    """Finding 2: twelve periodic boluses of 0.4 mg one minute apart (4.8 mg in 12 minutes)
    under 0.5 mg/h: the motor's pulses never pass 0.5 mg in any 60 minutes."""
    root = tmpdir()
    try:
        app, b = _app(root)
        _set(app, F2)
        run_until(app, b, 2 * DAY)
        assert _max_in_window(lambda: _pulse_times(b, b.t_ms), HOUR * 1000) <= 500_000
        assert _max_in_window(lambda: _pulse_times(b, b.t_ms), DAY * 1000) <= 10_000_000
        assert "CAP_REACHED" in app.alarms.active()
        # the boluses are capped, not everything: each day gives at least its basal
        assert b.pulses_at(b.t_ms) >= 2 * 800
    finally:
        rmtree(root)


def test_power_cut_does_not_reset_the_ledger():
    """A power cut (App made again from the same records, board time from 0, no RTC: the
    time off counts as nothing) keeps the windows: the hour around the cut stays capped."""
    root = tmpdir()
    try:
        app, b = _app(root)
        _set(app, F1)
        run_until(app, b, 30 * MIN)
        cut = b.t_ms
        assert b.pulses_at(cut) == 200  # the hour's 0.5 mg went out at once, then held
        app2, b2 = _app(root)
        run_until(app2, b2, 2 * HOUR)
        assert _max_in_window(lambda: _chain(_pulse_times(b, cut),
                                             _pulse_times(b2, b2.t_ms, cut * 1000)),
                              HOUR * 1000) <= 500_000
        # nothing in the first half hour after the restart: that is still the capped hour
        assert _count(_pulse_times(b2, b2.t_ms), -1, 29 * MIN * 1000) == 0
        assert b2.pulses_at(b2.t_ms) > 0  # and it resumed afterwards
    finally:
        rmtree(root)


def test_power_off_time_from_the_rtc_only_when_plausible():
    """The time powered off comes from the RTC when it moved forward; an RTC behind the record
    (set back, replaced) counts nothing, so the windows never expire early."""
    for off_s, resumes in ((2 * 3600, True), (-3600, False)):
        root = tmpdir()
        try:
            app, b = _app(root, EPOCH)
            _set(app, F1)
            run_until(app, b, 30 * MIN)
            assert b.pulses_at(b.t_ms) == 200
            app2, b2 = _app(root, EPOCH + 30 * 60 + off_s)
            run_until(app2, b2, 5 * MIN)
            n = b2.pulses_at(b2.t_ms)
            assert (n > 0) == resumes, (off_s, n)
        finally:
            rmtree(root)


def test_clock_set_backwards_does_not_reset_the_windows():
    """clock.set a day back, twice: the limiter runs on board time plus time off, never on the
    wall clock, so the capped hour and day stay capped."""
    root = tmpdir()
    try:
        app, b = _app(root)
        _set(app, F1)
        run_until(app, b, 30 * MIN)
        for k in (1, 2):
            app.call("clock.set", {"epoch_s": EPOCH - k * 86_400, "offset_s": 0}, "clinician",
                     "c%d" % k, b.t_ms)
            run_until(app, b, b.t_ms + 20 * MIN)
        run_until(app, b, 30 * HOUR)
        assert _max_in_window(lambda: _pulse_times(b, b.t_ms), HOUR * 1000) <= 500_000
        assert _max_in_window(lambda: _pulse_times(b, b.t_ms), DAY * 1000) <= 3_000_000
    finally:
        rmtree(root)


def test_concentration_change_counts_the_old_drug_in_the_line():
    """Programming a weaker concentration with no bridge (as a torn refill left it, finding
    4): the schedule pumps four times the volume, and the first 0.3 mL out of the tip is still
    the old, strong drug. The limiter counts it at the old concentration and holds the hour."""
    root = tmpdir()
    try:
        app, b = _app(root)
        strong = _plan(drug="baclofen", conc_ng_ml=2_000_000, catheter_nl=100_000,
                       basal={"kind": "continuous", "ng_day": 400_000},
                       caps={"ng_24h": 1_000_000, "ng_1h": 40_000})
        _set(app, strong)
        run_until(app, b, DAY)
        n_old = b.pulses_at(b.t_ms)
        weak = dict(strong, conc_ng_ml=500_000)
        program.plan_set(app, {"plan": weak}, b.t_ms, "p2")
        run_until(app, b, 3 * DAY)
        # ng per pulse leaving the tip: the line (0.3 mL = 1200 steps) held the strong drug

        def ng(i):
            return 500 if i < n_old + 1200 else 125

        assert _max_in_window(lambda: _pulse_times(b, b.t_ms), HOUR * 1000, ng) <= 40_000
        assert _max_in_window(lambda: _pulse_times(b, b.t_ms), DAY * 1000, ng) <= 1_000_000
        assert "CAP_REACHED" in app.alarms.active()
    finally:
        rmtree(root)


def test_prime_of_an_empty_line_counts_nothing_until_the_tip():
    """A prime declares pump path and catheter empty: pushing 0.3 mL at 1 mL/min (600 mcg if
    it were drug, over a 20 mcg hourly cap) counts nothing and is not held."""
    root = tmpdir()
    try:
        app, b = _app(root)
        p = _plan(drug="baclofen", conc_ng_ml=2_000_000, catheter_nl=100_000,
                  basal={"kind": "continuous", "ng_day": 400_000},
                  start={"kind": "prime", "pump_nl": 200_000, "catheter_nl": 100_000,
                         "nl_min": 1_000_000},
                  caps={"ng_24h": 1_000_000, "ng_1h": 20_000})
        _set(app, p)
        run_until(app, b, MIN)
        assert b.pulses_at(MIN) >= 1200  # the whole prime
        # counted so far: only the first basal segment (40 steps of drug, charged when it was
        # committed); the 1200 steps of the prime pushed out the empty line
        assert window_ng(app.limiter, b.t_ms) == [40 * 500, 40 * 500]
        run_until(app, b, 2 * DAY)
        assert "CAP_REACHED" not in app.alarms.active()
        assert window_ng(app.limiter, b.t_ms)[1] <= 400_000 + 500
    finally:
        rmtree(root)


def test_bridge_after_refill_counts_the_old_concentration():
    """The FIFO on its own: after 500 -> 2000 mcg/mL the first 0.3 mL pushed out counts at
    500, the next at 2000; a prime's empty volume counts 0."""
    lim = limmod.Limiter()
    p = _plan(conc_ng_ml=500_000, catheter_nl=100_000)
    lim.fifo = limitline.on_plan(lim.fifo, p, 200_000)
    assert lim.fifo == [300_000_000, 500_000]
    caps = {"ng_1h": 10**12, "ng_24h": 10**12}
    t = 0
    n_total = 0
    while n_total < 1320:
        n = lim.allow(t, 40, 0, 10_000, 250_000, 2_000_000, caps)
        lim.commit()
        lim.settled()
        n_total += n
        t += 1000
        if n_total == 1200:
            assert window_ng(lim, t) == [1200 * 125, 1200 * 125]
    assert window_ng(lim, t) == [1200 * 125 + 120 * 500] * 2
    assert lim.fifo == [300_000_000, 2_000_000]
    # a prime: empty at the tip, the rest of the line holds the plan's drug
    lim.fifo = limitline.on_plan(lim.fifo, _plan(catheter_nl=100_000, start={
        "kind": "prime", "pump_nl": 0, "catheter_nl": 100_000, "nl_min": 1000}), 200_000)
    assert lim.fifo == [100_000_000, 0, 200_000_000, 10_000_000]


def test_fifo_stays_bounded_and_aborts_give_back():
    """Many concentration changes: at most MAX_CHUNKS chunks (merged at the higher
    concentration), and an aborted segment un-charges the pulses it did not make."""
    lim = limmod.Limiter()
    lim.fifo = limitline.on_plan(lim.fifo, _plan(catheter_nl=100_000), 200_000)
    caps = {"ng_1h": 10**12, "ng_24h": 10**12}
    for k in range(20):
        lim.allow(k * 1000, 4, 0, 1000, 250_000, 1_000 + k, caps)
        lim.commit()
        lim.settled()
    assert len(lim.fifo) <= 2 * limmod.MAX_CHUNKS
    assert sum(lim.fifo[0::2]) == 300_000_000
    before = window_ng(lim, 30_000)
    fifo = list(lim.fifo)
    n = lim.allow(30_000, 10, 0, 1000, 250_000, 5_000_000, caps)
    lim.commit()
    assert n == 10 and window_ng(lim, 30_000)[0] == before[0] + 10 * 2500
    lim.abort(3)  # 3 of the 10 pulses made: 7 given back, the line moved by 3 steps
    assert window_ng(lim, 30_000) == [before[0] + 3 * 2500, before[1] + 3 * 2500]
    assert lim.fifo != fifo and sum(lim.fifo[0::2]) == 300_000_000
    assert lim.fifo[0] == fifo[0] - 3 * 250_000


def test_finding9_power_cut_mid_segment_leaves_a_bounded_uncertainty():
    """Finding 9: a cut inside a segment leaves the account above the pulses; the restored
    uncertainty bounds the gap: account - uncertain <= pulses <= account."""
    root = tmpdir()
    try:
        app, b = _app(root)
        _set(app, _plan(caps={"ng_24h": 10**9, "ng_1h": 10**9}))
        run_until(app, b, 3 * HOUR)
        seg = app.seg
        assert seg is not None
        b.t_ms = seg[0] + (seg[4] - seg[0]) // 2  # the power fails halfway through it
        pulsed = b.pulses_at(b.t_ms)
        app2, b2 = _app(root)
        st = app2.call("status", {}, "clinician", "s", 0)
        unc_steps = st["uncertain_nl"] * 1000 // 250_000
        assert st["uncertain_nl"] > 0
        assert st["delivered_steps"] - unc_steps <= pulsed < st["delivered_steps"]
    finally:
        rmtree(root)


def test_the_running_window_sums_match_the_rings():
    """The hour's and the day's window at the newest bucket come from sums kept up to date
    (allow() no longer adds up 31 and 49 buckets before every segment): after every step of
    a varied run, and after a restore from the persisted ledger, they equal the rings added
    up, and allow() cuts a segment exactly where the ring sums say."""
    import random

    rnd = random.Random(5) if hasattr(random, "Random") else None
    rand = rnd.randint if rnd is not None else (lambda a, b: a + random.getrandbits(16) % (b - a + 1))
    caps = {"ng_1h": 400_000, "ng_24h": 3_000_000}
    lim = limmod.Limiter(0)
    now = 0
    for i in range(400):
        now += rand(1, 40) * (MIN if i % 7 else 20 * MIN)
        n = lim.allow(now, rand(1, 40), rand(0, 5000), rand(1, 20) * 50_000, 250_000,
                      10_000_000, caps)
        if n:
            lim.commit()
            if i % 5 == 0:
                lim.abort(rand(0, n))
            else:
                lim.settled()
        for w, r in ((0, lim.h), (1, lim.d)):
            assert lim.window_sum(w, lim.top[w] - len(r) + 1) == sum(r), (i, w)
            assert lim.window_sum(w, lim.top[w] - len(r) - 5) == sum(r), (i, w)
        if i % 50 == 49:
            count = {"lim": lim.to_dict(now), "fly_nl": 0}
            lim = limmod.Limiter(now)
            lim.load(limitline.restore(lim, count, now, None))
            for w, r in ((0, lim.h), (1, lim.d)):
                assert lim.window_sum(w, lim.top[w] - len(r) + 1) == sum(r), (i, w)
