"""Safety invariants of the pump app, by property-based tests (hypothesis; CPython only).

Random sequences of commands (patient boluses, stop/resume, refills, re-programming, alarm
acks, wall-clock jumps of days or time-zone changes), board time jumps and power cuts (a new
App on the same files, board time restarted) drive an App on a fake board that records every
segment, so the exact pulse times are known. Whatever the sequence:
  - the drug delivered in any rolling 24 h (and any hour) never exceeds the plan's caps,
    measured from the board's pulse times, not from the app's account;
  - no patient bolus is accepted inside its lockout or beyond its maximum per 24 h (in real,
    board-side time, across power cuts);
  - a battery at end of service (EOS) always stops the motor, and nothing moves it again;
  - random commands with random arguments never crash the handler (only CommandError) and a
    refused command changes nothing.
Settings keep the whole file well under 30 s.
"""

import os
import shutil
import sys
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "board"))
from fakeboard import FakeBoard, run_until  # noqa: E402
from pumpcore import proto  # noqa: E402
from pumpcore.app import App  # noqa: E402

HOUR = 3_600_000
DAY = 24 * HOUR
PLAN = {"drug": "morphine", "conc_ng_ml": 10_000_000,
        "basal": {"kind": "continuous", "ng_day": 2_000_000},
        "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 7200, "max_24h": 6},
        "caps": {"ng_24h": 2_800_000, "ng_1h": 200_000}}  # the check counts 2.743 mg (24 h 30 min)
LOCKOUT_MS = 7_200_000
MAX_24H = 6
NG_PER_STEP = 250_000 * 10_000_000 // 10**9  # 0.25 µL x 10 mg/mL = 2500 ng

PROPS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class RecBoard(FakeBoard):
    """A fake board that keeps every segment (start_us, made pulses, first_us, interval_us),
    on a time line that continues across power cuts (`base_ms`)."""

    def __init__(self, root, log, base_ms):
        super().__init__(root=root)
        self.log = log
        self.base_ms = base_ms
        self._cur = None

    def motor_start(self, count, first_us, interval_us, forward):
        super().motor_start(count, first_us, interval_us, forward)
        self._cur = [(self.base_ms + self.t_ms) * 1000, count, first_us, interval_us]
        self.log.append(self._cur)

    def motor_stop(self):
        n = super().motor_stop()
        if self._cur is not None:
            self._cur[1] = n if n < self._cur[1] else self._cur[1]
            self._cur = None
        return n

    def cut(self):
        """Power fails now: a running segment stops where it is."""
        if self._cur is not None and self.seg is not None:
            self._cur[1] = self._done(self.t_ms * 1000)
        self._cur = None


def pulse_times_us(log, until_us):
    out = []
    for start, count, first, interval in log:
        for i in range(count):
            t = start + first + i * interval
            if t > until_us:
                break
            out.append(t)
    out.sort()
    return out


def max_in_window(times, window):
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        if i - j + 1 > best:
            best = i - j + 1
    return best


WAIT_MS = st.one_of(st.sampled_from([2 * HOUR + 1, 2 * HOUR + 600_000, 3 * HOUR, 600_000,
                                     HOUR, 8 * HOUR]), st.integers(1, 8 * HOUR))
BOLUS = st.tuples(st.just("bolus"), st.just(0))
NOISE = st.one_of(
    st.tuples(st.just("stop"), st.just(0)),
    st.tuples(st.just("resume"), st.just(0)),
    st.tuples(st.just("refill"), st.just(0)),
    st.tuples(st.just("reprogram"), st.just(0)),
    st.tuples(st.just("ack"), st.just(0)),
    st.tuples(st.just("clock"), st.integers(1_600_000_000, 1_900_000_000)),
    st.tuples(st.just("tz"), st.integers(-56, 56)),
    st.tuples(st.just("cut"), st.integers(0, 3 * HOUR)),
)
# an episode: time passes, then the patient presses (mostly) or something else happens
EPISODE = st.tuples(WAIT_MS, st.one_of(BOLUS, BOLUS, BOLUS, NOISE))


def _play(p, episodes):
    for wait_ms, (kind, arg) in episodes:
        p.do("wait", wait_ms)
        p.do(kind, arg)


class Pump:
    def __init__(self, root):
        self.root = root
        self.log = []
        self.real_ms = 0  # board-side real time across boots (downtime included)
        self.b = RecBoard(root + "/", self.log, 0)
        self.app = App(self.b, keys={})
        self.accepted = []  # real ms of accepted patient boluses
        self.req = 0
        self.call("refill", {"volume_nl": 20_000_000})
        self.call("plan.set", {"plan": PLAN})

    def now(self):
        return self.b.base_ms + self.b.t_ms

    def call(self, cmd, args=None, role="clinician"):
        """A command as the firmware's loop handles one: then the loop iteration goes on
        (tick), so the wake-up time follows what the command changed."""
        self.req += 1
        try:
            return self.app.call(cmd, args or {}, role, "r%d" % self.req, self.b.t_ms)
        finally:
            self.app.step(self.b.t_ms)

    def do(self, kind, arg):
        b, app = self.b, self.app
        if kind == "wait":
            run_until(app, b, b.t_ms + arg)
        elif kind == "bolus":
            try:
                self.call("bolus", role="patient")
                self.accepted.append(self.now())
            except proto.CommandError as e:
                assert e.code in (proto.LOCKOUT, proto.MAX_24H, proto.THERAPY_STOPPED,
                                  proto.SAFE_STATE), e.code
        elif kind in ("stop", "resume", "refill", "reprogram", "ack", "clock", "tz"):
            cmd, args = {
                "stop": ("therapy.stop", {}), "resume": ("therapy.resume", {}),
                "refill": ("refill", {"volume_nl": 20_000_000}),
                "reprogram": ("plan.set", {"plan": PLAN}), "ack": ("ack", {}),
                "clock": ("clock.set", {"epoch_s": arg, "offset_s": 0}),
                "tz": ("clock.set", {"epoch_s": 1_767_225_600 + b.t_ms // 1000,
                                     "offset_s": arg * 900}),
            }[kind]
            self.call(cmd, args)
        elif kind == "cut":
            b.cut()
            base = self.now() + arg
            self.b = RecBoard(self.root + "/", self.log, base)
            self.app = App(self.b, keys={})
        else:
            raise AssertionError(kind)


def _with_pump(fn):
    d = tempfile.mkdtemp(prefix="pumprig-props-")
    try:
        return fn(Pump(d))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@PROPS
@given(st.lists(EPISODE, min_size=12, max_size=40))
def test_caps_lockout_and_daily_maximum_hold(episodes):
    def body(p):
        _play(p, episodes)
        run_until(p.app, p.b, p.b.t_ms + DAY)  # let everything started finish
        times = pulse_times_us(p.log, p.now() * 1000)
        # the caps, from the board's pulse times
        assert max_in_window(times, DAY * 1000) * NG_PER_STEP <= PLAN["caps"]["ng_24h"]
        assert max_in_window(times, HOUR * 1000) * NG_PER_STEP <= PLAN["caps"]["ng_1h"]
        # lockout (start to start) and the maximum per 24 h, in real time
        acc = p.accepted
        for a, b in zip(acc, acc[1:], strict=False):
            assert b - a >= LOCKOUT_MS, (a, b)
        assert max_in_window([t * 1000 for t in acc], DAY * 1000) <= MAX_24H
    _with_pump(body)


@PROPS
@given(st.lists(EPISODE, max_size=12), st.integers(2_820, 2_990), st.integers(0, 10 * HOUR))
def test_end_of_service_stops_the_motor(episodes, mv, after_ms):
    def body(p):
        _play(p, episodes)
        p.call("therapy.resume") if p.app.therapy == "stopped" else None
        p.b.mv = mv
        run_until(p.app, p.b, p.b.t_ms + 2 * DAY)  # ample samples of a low cell
        assert "EOS" in p.app.alarms.active()
        assert p.b.seg is None or not p.b.motor_busy()
        t_eos = p.now()
        n = len(pulse_times_us(p.log, t_eos * 1000))
        later = [a for _, a in episodes[:5]] + [("bolus", 0), ("resume", 0), ("wait", after_ms)]
        for kind, arg in later:
            if kind != "cut":
                try:
                    p.do(kind, arg)
                except proto.CommandError:
                    pass
        run_until(p.app, p.b, p.b.t_ms + DAY)
        assert len(pulse_times_us(p.log, p.now() * 1000)) == n  # not one more pulse
    _with_pump(body)


# ------------------------------------------------------------------ the command handler
JSONV = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**18), 10**18),
              st.text(max_size=6)),
    lambda k: st.one_of(st.lists(k, max_size=3), st.dictionaries(st.text(max_size=4), k,
                                                                  max_size=3)),
    max_leaves=6)
ARGNAMES = st.sampled_from(["plan", "volume_nl", "conc_ng_ml", "refill_by_epoch_s", "step_pl",
                            "kind", "since", "limit", "epoch_s", "offset_s", "steps",
                            "rate_nl_day", "next_change_epoch_s", "next_offset_s", "role",
                            "mac", "x"])
ARGS = st.dictionaries(ARGNAMES, JSONV, max_size=4)
CMDS = st.sampled_from(sorted(proto.COMMANDS) + ["nope", "plan", "status.x"])
ROLES = st.sampled_from(["none", "patient", "clinician"])
COUNT = {"calls": 0}


def _snapshot(app):
    return (app.plan_crc(), app.therapy, app.step_pl, app.reservoir.volume_nl, app.steps,
            app.clock.to_dict(), list(app.boluses), app.lockout_until_ms, app.bench is None,
            app.alarms.to_dict(), app.last_bolus)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(CMDS, ARGS, ROLES), min_size=1, max_size=30))
def test_random_commands_never_crash_and_refusals_change_nothing(calls):
    def body(p):
        p.do("wait", 3 * HOUR)
        srv = p.app.server
        for cmd, args, role in calls:
            COUNT["calls"] += 1
            before = _snapshot(p.app)
            # through the real dispatcher (role and argument checks) with the role Server._line
            # gives a request: that of the signed session, none for a plain frame
            try:
                srv._dispatch("q%d" % COUNT["calls"], cmd, args, p.b.t_ms, role)
            except proto.CommandError as e:
                assert e.code in proto.ERROR_CODES
                if cmd != "auth":  # a failed auth only counts towards its throttle
                    assert _snapshot(p.app) == before, (cmd, args, e.code)
            p.do("wait", 60_000)
        st_ = p.app.call("status", {}, "clinician", "s", p.b.t_ms)
        assert st_["therapy"] in ("running", "stopped", "safe")
    _with_pump(body)
