"""The stateful property test of issue 11: a hypothesis rule-based state machine drives the App
on a fake board through random sequences of plan.set (random valid plans), refills (new
concentrations too), patient boluses (new and retried request ids), clock.set forwards and
backwards, daylight-saving changes, acks, time advances and power cuts, at random points INSIDE
commands and loop iterations as well as between them.

A power cut is modelled at the level of the operating system, whatever the record format: an
injector (`Disk`) counts every file write, rename and remove the firmware makes under the rig's
root; at the Nth one it takes an image of the files as the power failure leaves them (a write
torn in its middle, a rename or remove not done). RAM is lost: a new App is built on that image.
The fake motor's pulses made until then are real and kept, on one time line across boots (the
downtime passes while nothing pulses).

Invariants, checked after every rule, from the pulses and never from the firmware's account:
  caps       the drug leaving the catheter tip in any rolling 60 min and 24 h window of
             monotonic (powered + downtime) time stays within the caps of the plan in force at
             each pulse. The drug that leaves the tip is computed here, independent of the
             firmware: each pulse pushes one step of reservoir fluid (the concentration of the
             last refill) into a FIFO as long as the dead volume (the board's pump_path_nl plus
             the plan's catheter_nl) and pushes one step of the FIFO's head out of the tip.
             Exact 60 min and 24 h windows: stricter than the limiter's own 62 min / 24 h 30 min
             buckets. A missing `ng_1h` is the daily cap (the firmware's default; a 60 min
             window is inside a 24 h one anyway).
             Across plan.set (a design choice, documented here): the firmware keeps the
             limiter's ledger when the plan changes (docs/architecture.md, "Persistence": a new
             plan does not reset it), so the machine checks the strictest reading of that
             promise: the window ending at each pulse holds ALL drug that left in it, whichever
             plan gave it, and must be within the caps of the plan in force at that pulse (a
             stricter new plan is held until the old plan's drug leaves its window).
  account    the firmware's delivered_steps (status) is at least the pulses made and at most the
             pulses plus one segment (max_segment_nl) per power cut; and where status shows an
             `uncertain_*` bound, account - uncertain <= pulses.
  ids        no patient-bolus request id is dosed twice: a retried id (the last one or one of the
             few before it, after a cut or not) never raises the 24 h bolus count nor is it
             answered with a different dose (the firmware remembers the ids of the last 24 h's
             boluses; an id older than that may dose again, as a new request).
  torn       after a cut inside a command, the state restored from the files is the state before
             the command or the state after it (compared as what a restored App reports: plan
             CRC, drug, concentration, therapy, activity, reservoir within one segment, bolus
             count, alarms but RESET, and the clock's offset for clock commands; the wall clock
             itself is not compared, as a restore resumes it at the last account record); and the
             same command retried with the same request id then leaves the state after it (a
             patient bolus retried may instead be refused, never dosed a second time).
  refused    a refused command (CommandError) changes nothing the state compare sees.

Covers issue 11's stateful property test, and through it findings 1 (a start bolus outside
every cap), 2 and 3 (periodic boluses against the caps, repeated when the clock goes back), 4
and 5 (torn refill and programming) and 9 (the account against the pulses, `uncertain_*`). On
the main of 2026-12-04 before the limiter, generations and request ids it failed; shrunk
counterexamples seen there: a 50 µg start bolus over 60 s under the default hourly cap of a
0.1 mg/day plan (4250 ng in the first 5 s, cap 4167 ng); plan.set cut between its plan and
state records (new plan, old schedule: start bolus skipped, or a restored App whose `status`
raises TypeError); two refills with new concentrations in a row (the second bridge assumes the
dead volume holds the first refill's drug: now held by the limiter, see the replayed test
below); an older patient-bolus id retried after a newer bolus, dosed again (fixed in
pumpcore/patient.py). The plain tests at the end replay those findings.

Plans: `with_caps` takes the tightest daily cap of a 5 % ladder that the exact worst-window
check (pumpcore.worst, through plan.validate) accepts, then an hourly one if the hour is what
refuses; a refusal names the cap in PlanError.cap (its `field` is the source that weighs most).

Profiles: the short one runs in `make test`; PUMPRIG_LONG=1 selects the long one that
bench/safety_machine.py runs in `make campaign` (figures in docs/benchmarks.md).
Plans with a priming start are not generated (the harness would need the prime's declared empty
volumes); the drug is morphine (its daily ceiling applies), the catheter volume is fixed per run.
"""

import builtins
import os
import shutil
import sys
import tempfile
from collections import deque

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "board"))
from fakeboard import FakeBoard, run_until  # noqa: E402
from pumpcore import plan as planmod  # noqa: E402
from pumpcore import proto  # noqa: E402
from pumpcore.app import App  # noqa: E402

HOUR = 3_600_000
DAY = 24 * HOUR
DRUG = "morphine"
EPOCH0 = 1_800_000_000  # 2027-01-15
CONCS = (1_000_000, 2_000_000, 5_000_000, 10_000_000)
LONG = os.environ.get("PUMPRIG_LONG") == "1"

# figures for bench/safety_machine.py (and the report of a failure)
STATS = {"sequences": 0, "steps": 0, "cuts": 0, "cuts_in_commands": 0, "cuts_in_loop": 0,
         "commands": 0, "refused": 0, "pulses": 0, "worst_1h_pct": 0, "worst_24h_pct": 0}


class Cut(BaseException):
    """The power failed here (a BaseException: the firmware's `except Exception` must not
    swallow it)."""


# ------------------------------------------------------------------ the power-cut injector
class _WFile:
    """A file opened for writing under the watched root: every write is one counted operation,
    written through unbuffered so the disk image is exactly what the firmware wrote."""

    def __init__(self, disk, path, f):
        self._disk, self._path, self._f = disk, path, f

    def write(self, data):
        if not self._disk.op("write", self._path, data):
            return len(data)
        return self._f.write(data)

    def close(self):
        self._f.close()

    def flush(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


class Disk:
    """Watches the file operations under `root` while armed (open, os.rename, os.remove and
    friends are wrapped process-wide for the call only). At operation number `nth` it takes the
    image the power cut leaves: `raise_` True raises Cut there (a cut inside a loop iteration),
    False lets the command run on so the state after it is known too."""

    def __init__(self, root):
        self.root = root
        self.nth = None
        self.raise_ = False
        self.count = 0
        self.image = None  # the files as the cut left them
        self.dead = False

    def _mine(self, path):
        p = os.path.abspath(os.fspath(path))
        return p.startswith(self.root)

    def op(self, kind, path, data=None):
        """Called before an operation; False when it must not happen (power already off)."""
        if self.dead:
            return False
        self.count += 1
        if self.nth is None or self.count != self.nth:
            return True
        img = image(self.root)
        if kind == "write":
            rel = os.path.relpath(os.path.abspath(path), self.root)
            img[rel] = img.get(rel, b"") + bytes(data)[: len(data) // 2]
        self.image = img
        if self.raise_:
            self.dead = True
            raise Cut()
        return True

    def __enter__(self):
        self._saved = (builtins.open, os.rename, os.remove, os.replace, os.unlink)
        real_open, real_rename, real_remove, real_replace, real_unlink = self._saved
        disk = self

        def fopen(path, mode="r", *a, **kw):
            if isinstance(path, int) or not disk._mine(path) or not any(c in mode for c in "wax+"):
                return real_open(path, mode, *a, **kw)
            if disk.dead:
                # the power is off: nothing reaches the disk any more
                return _WFile(disk, path, real_open(os.devnull, "wb", buffering=0))
            if "b" in mode:
                return _WFile(disk, path, real_open(path, mode, buffering=0))
            return _WFile(disk, path, real_open(path, mode, *a, **kw))

        def wrap(real, kind):
            def fn(src, *a, **kw):
                if disk._mine(src) and not disk.op(kind, src):
                    return None
                return real(src, *a, **kw)
            return fn

        builtins.open = fopen
        os.rename = wrap(real_rename, "rename")
        os.replace = wrap(real_replace, "rename")
        os.remove = wrap(real_remove, "remove")
        os.unlink = wrap(real_unlink, "remove")
        return self

    def __exit__(self, *a):
        builtins.open, os.rename, os.remove, os.replace, os.unlink = self._saved
        self.nth = None
        return False


def image(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def put_image(root, img):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for rel, data in img.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


# ------------------------------------------------------------------ the board
class RecBoard(FakeBoard):
    """A fake board that logs every segment as [start_us, pulses, first_us, interval_us,
    reservoir conc_ng_ml] on a
    time line that goes on across power cuts (base_ms: the real time of this boot's 0)."""

    def __init__(self, root, log, base_ms, conc_fn):
        super().__init__(root=root)
        self.log = log
        self.base_ms = base_ms
        self.conc_fn = conc_fn  # the reservoir's concentration now (the test's physical view)
        self._cur = None

    def motor_start(self, count, first_us, interval_us, forward):
        super().motor_start(count, first_us, interval_us, forward)
        self._cur = [(self.base_ms + self.t_ms) * 1000, count, first_us, interval_us,
                     self.conc_fn()]
        self.log.append(self._cur)

    def motor_stop(self):
        n = super().motor_stop()
        if self._cur is not None:
            self._cur[1] = min(n, self._cur[1])
            self._cur = None
        return n

    def cut(self):
        """The power fails now: a running segment stops where it is."""
        if self._cur is not None and self.seg is not None:
            self._cur[1] = self._done(self.t_ms * 1000)
        self._cur = None
        self.seg = None


def restored_view(img, clock_fields):
    """What an App restored from the files `img` reports (fresh board, board time 0)."""
    d = tempfile.mkdtemp(prefix="pumprig-sm-view-")
    try:
        put_image(d, img)
        try:
            app = App(FakeBoard(root=d + "/"), keys={})
            s = app.call("status", {}, "clinician", "v", 0)
        except Exception as e:
            raise AssertionError("an App restored from these files crashes: %s: %s\nfiles: %r"
                                 % (type(e).__name__, e, sorted(img))) from e
        view = {k: s.get(k) for k in ("plan_crc", "drug", "conc_ng_ml", "therapy", "mode",
                                      "boluses_24h")}
        view["alarms"] = sorted(a for a in s.get("alarms", ()) if a != "RESET")
        view["reservoir_nl"] = s.get("reservoir_nl")
        if clock_fields:
            view["offset_s"] = app.call("clock.get", {}, "clinician", "c", 0).get("offset_s")
        return view
    finally:
        shutil.rmtree(d, ignore_errors=True)


def same_view(a, b, seg_nl):
    """Equal, the reservoir within one segment (a stop's account record may move it)."""
    for k in a:
        if k == "reservoir_nl":
            if (a[k] is None) != (b[k] is None) or (a[k] is not None
                                                    and abs(a[k] - b[k]) > seg_nl + 1):
                return False
        elif a[k] != b[k]:
            return False
    return True


# ------------------------------------------------------------------ plans
MG = 1_000_000  # ng


@st.composite
def plan_shapes(draw):
    """A plan without its concentration and caps (added by the machine)."""
    kind = draw(st.sampled_from(["continuous", "continuous", "flex", "step", "stopped"]))
    if kind == "continuous":
        basal = {"kind": kind, "ng_day": draw(st.integers(MG // 10, 3 * MG))}
    elif kind == "flex":
        n = draw(st.integers(2, 4))
        starts = sorted(draw(st.sets(st.integers(1, 1439), min_size=n - 1, max_size=n - 1)))
        basal = {"kind": kind,
                 "segments": [[s, draw(st.integers(MG // 20, 3 * MG))] for s in [0] + starts]}
    elif kind == "step":
        basal = {"kind": kind, "ng_day": draw(st.integers(MG // 2, 2 * MG)),
                 "pct": draw(st.integers(5, 30)), "every_days": draw(st.integers(1, 2)),
                 "steps": draw(st.integers(1, 4))}
    else:
        basal = {"kind": kind}
    p = {"drug": DRUG, "basal": basal}
    if draw(st.booleans()):
        p["start"] = {"kind": "bolus", "ng": draw(st.integers(MG // 20, 2 * MG)),
                      "dur_s": draw(st.sampled_from([60, 600, 3600, 7200]))}
    if draw(st.booleans()):
        times = sorted(draw(st.sets(st.integers(0, 1439), min_size=1, max_size=4)))
        gaps = [((times[(i + 1) % len(times)] - times[i]) % 1440 or 1440)
                for i in range(len(times))]
        p["periodic"] = {"times_min": times, "ng": draw(st.integers(MG // 50, MG // 2)),
                         "dur_s": draw(st.integers(60, min(1800, 60 * min(gaps))))}
    if draw(st.booleans()):
        dur = draw(st.sampled_from([60, 300, 600]))
        p["patient"] = {"ng": draw(st.integers(MG // 50, MG * 3 // 10)), "dur_s": dur,
                        "lockout_s": draw(st.sampled_from([600, 1800, 3600, 7200])),
                        "max_24h": draw(st.integers(1, 8))}
    p["_tight"] = draw(st.sampled_from([True, True, False]))
    return p


def with_caps(shape, conc, catheter_nl, limits):
    """The plan with the tightest caps (a ladder in steps of 5 %) that validate accepts, or
    the loosest (the drug's ceiling) when `_tight` is False; None if none passes."""
    base = {k: v for k, v in shape.items() if k != "_tight"}
    base["conc_ng_ml"] = conc
    base["catheter_nl"] = catheter_nl
    ceiling = planmod.DRUGS[DRUG]["max_ng_day"]
    ladder = []
    c = MG // 20
    while c < ceiling:
        ladder.append(c)
        c = c * 105 // 100 + 1
    ladder.append(ceiling)
    if not shape["_tight"]:
        ladder = [ceiling]

    def ok(p):
        try:
            planmod.validate(p, limits)
            return True
        except planmod.PlanError as e:
            # a window over a cap names the source that weighs most in `field` and the cap in
            # `cap` (pumpcore.worst); a shape error has no `cap`
            return getattr(e, "cap", None) or e.field
    for c24 in ladder:
        p = dict(base, caps={"ng_24h": c24})
        r = ok(p)
        if r is True:
            if not shape["_tight"]:
                p["caps"]["ng_1h"] = c24
                if ok(p) is not True:
                    del p["caps"]["ng_1h"]
            return p
        if r == "caps.ng_1h":  # the hour's default did not do: a ladder of its own
            c1 = max(1, c24 // 24)
            while c1 <= c24:
                p = dict(base, caps={"ng_24h": c24, "ng_1h": c1})
                if ok(p) is True:
                    return p
                c1 = c1 * 105 // 100 + 1
        elif r != "caps.ng_24h":
            return None
    return None


# ------------------------------------------------------------------ the machine
class SafetyMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        STATS["sequences"] += 1
        self.dir = tempfile.mkdtemp(prefix="pumprig-sm-")
        self.root = os.path.join(self.dir, "fs")
        os.makedirs(self.root)
        self.disk = Disk(os.path.abspath(self.root))
        self.log = []
        self.b = RecBoard(self.root + "/", self.log, 0, lambda: self.res_conc)
        self.app = App(self.b, keys={})
        cfg = self.b.config
        self.step_pl = cfg["step_pl"]
        self.seg_steps = cfg.get("max_segment_nl", 10_000) * 1000 // self.step_pl
        self.seg_nl = cfg.get("max_segment_nl", 10_000)
        self.cuts = 0
        self.req = 0
        self.epoch_guess = EPOCH0
        # the physical side: reservoir concentration, dead-volume FIFO, windows
        self.res_conc = None
        self.fifo = deque()  # [pl, conc]
        self.caps_at = []  # [(real µs from which they apply (exclusive), caps)]
        self.done = []  # per segment of the log: pulses already taken into the windows
        self.w1 = deque()
        self.w24 = deque()
        self.s1 = 0
        self.s24 = 0
        self.pulses = 0
        self.bolus_ids = []  # [req_id, first ok answer or None]

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ helpers
    def now(self):
        return self.b.base_ms + self.b.t_ms

    def status(self):
        return self.app.call("status", {}, "clinician", "s", self.b.t_ms)

    def _call(self, cmd, args, req_id, role="clinician"):
        try:
            return self.app.call(cmd, args, role, req_id, self.b.t_ms)
        except proto.CommandError as e:
            return e

    def live_view(self):
        s = self.status()
        v = {k: s.get(k) for k in ("plan_crc", "conc_ng_ml", "therapy", "mode", "boluses_24h",
                                   "reservoir_nl", "lockout_until_epoch_s", "epoch_s")}
        v["alarms"] = sorted(s.get("alarms", ()))
        return v

    def power_cut(self, img, downtime_ms):
        """RAM lost, files as `img`, the pulses made so far kept; power back after downtime."""
        self.take_pulses()
        self.b.cut()
        put_image(self.root, img)
        self.cuts += 1
        STATS["cuts"] += 1
        self.b = RecBoard(self.root + "/", self.log, self.now() + downtime_ms,
                          lambda: self.res_conc)
        self.app = App(self.b, keys={})
        self.note_caps()

    def note_caps(self):
        """The caps of the plan in force from now on (read from the pump: plan.get)."""
        p = self.app.call("plan.get", {}, "clinician", "g", self.b.t_ms).get("plan")
        caps = dict(p["caps"]) if p else None
        if not self.caps_at or self.caps_at[-1][1] != caps:
            self.caps_at.append((self.now() * 1000, caps))

    def caps_for(self, t_us):
        """The caps in force at a pulse at t_us (a change at a command's instant applies to
        the pulses after it: the ones at that instant were made before the command)."""
        caps = None
        for t, c in self.caps_at:
            if t < t_us:
                caps = c
            else:
                break
        return caps

    def command(self, cmd, args, cut_at=None, req_id=None, role="clinician", clock=False,
                downtime_ms=0, new_doses=1):
        """Run one command as the loop does (then a loop iteration). With cut_at: the power
        fails at that file operation inside the command; the torn-state invariant is checked
        and the command is retried with the same request id. Returns (answer, was_cut)."""
        self.req += 1
        req_id = req_id or "r%d" % self.req
        STATS["commands"] += 1
        self.take_pulses()
        if cut_at is None:
            v0 = self.live_view()
            ans = self._call(cmd, args, req_id, role)
            if isinstance(ans, proto.CommandError):
                STATS["refused"] += 1
                assert self.live_view() == v0, "refused %s %r changed the state: %r -> %r" % (
                    cmd, args, v0, self.live_view())
            self.app.step(self.b.t_ms)
            self.note_caps()
            return ans, False
        before = image(self.root)
        self.disk.nth, self.disk.raise_, self.disk.count, self.disk.image = cut_at, False, 0, None
        with self.disk:
            ans = self._call(cmd, args, req_id, role)
        if self.disk.image is None:  # fewer writes than cut_at: the cut comes after it
            self.app.step(self.b.t_ms)
            self.note_caps()
            return ans, False
        after = image(self.root)
        STATS["cuts_in_commands"] += 1
        self.power_cut(self.disk.image, downtime_ms)
        v_before = restored_view(before, clock)
        v_after = restored_view(after, clock)
        v_cut = restored_view(image(self.root), clock)
        assert same_view(v_cut, v_before, self.seg_nl) or same_view(v_cut, v_after, self.seg_nl), (
            "torn %s: a cut at file operation %d left a state that is neither before nor after "
            "the command:\n before %r\n after  %r\n cut    %r" % (cmd, cut_at, v_before, v_after,
                                                               v_cut))
        # the client retries the request it had no answer to, with the same id
        ans2 = self._call(cmd, args, req_id, role)
        retried = image(self.root)
        self.app.step(self.b.t_ms)
        self.note_caps()
        v_retry = restored_view(retried, clock)
        if cmd == "bolus":
            # a patient bolus retried may be refused (a lockout: the restore resumes at the
            # last account record); what must never happen is a second dose
            assert v_retry["boluses_24h"] <= v_before["boluses_24h"] + new_doses, (
                "bolus %s dosed %s across a cut at file operation %d and its retry: %d -> %d "
                "boluses in 24 h" % (req_id, "twice" if new_doses else "again", cut_at,
                                     v_before["boluses_24h"], v_retry["boluses_24h"]))
        elif not isinstance(ans, proto.CommandError):
            assert same_view(v_retry, v_after, self.seg_nl), (
                "%s retried after a cut at file operation %d: not the state after it:\n"
                " after  %r\n retry  %r\n (answer %r)" % (cmd, cut_at, v_after, v_retry, ans2))
        return ans2, True

    # ------------------------------------------------------------ the physical side
    def take_pulses(self):
        """Every pulse made up to now, in time order, through the dead volume to the tip and
        into the 1 h and 24 h windows (checked against the caps in force at each pulse)."""
        now_us = self.now() * 1000
        while len(self.done) < len(self.log):
            self.done.append(0)
        new = []
        for i, (start, count, first, interval, _) in enumerate(self.log):
            k = self.done[i]
            while k < count:
                t = start + first + k * interval
                if t > now_us:
                    break
                new.append((t, i))
                k += 1
            self.done[i] = k
        new.sort()
        step = self.step_pl
        for t_us, i in new:
            # one step of reservoir fluid in, one step out of the tip
            self.fifo.append([step, self.log[i][4]])
            out = 0  # pL x ng/mL = 1e-9 ng
            need = step
            while need:
                head = self.fifo[0]
                take = head[0] if head[0] <= need else need
                out += take * head[1]
                head[0] -= take
                need -= take
                if not head[0]:
                    self.fifo.popleft()
            self.pulses += 1
            STATS["pulses"] += 1
            t_ms = t_us // 1000
            for w, span, attr in ((self.w1, HOUR, "s1"), (self.w24, DAY, "s24")):
                w.append((t_us, out))
                setattr(self, attr, getattr(self, attr) + out)
                while w[0][0] <= t_us - span * 1000:
                    setattr(self, attr, getattr(self, attr) - w.popleft()[1])
            caps = self.caps_for(t_us)
            if caps is None:
                continue
            c24 = caps.get("ng_24h")
            c1 = caps.get("ng_1h") or c24  # the firmware's default hourly cap
            if c1:
                STATS["worst_1h_pct"] = max(STATS["worst_1h_pct"], self.s1 // (c1 * 10_000_000))
            if c24:
                STATS["worst_24h_pct"] = max(STATS["worst_24h_pct"],
                                             self.s24 // (c24 * 10_000_000))
            assert c1 is None or self.s1 <= c1 * 1_000_000_000, (
                "1 h cap: %d ng left the tip in the 60 min up to t=%d ms, cap %d ng (caps %r)"
                % (self.s1 // 1_000_000_000, t_ms, c1, caps))
            assert c24 is None or self.s24 <= c24 * 1_000_000_000, (
                "24 h cap: %d ng left the tip in the 24 h up to t=%d ms, cap %d ng (caps %r)"
                % (self.s24 // 1_000_000_000, t_ms, c24, caps))

    def advance(self, ms):
        """Time passes: the loop runs as board/main.py runs it, on the fake board's clock."""
        run_until(self.app, self.b, self.b.t_ms + ms)
        STATS["steps"] += 1

    # ------------------------------------------------------------ setup
    @initialize(conc=st.sampled_from(CONCS), catheter_nl=st.sampled_from([0, 100_000, 250_000]),
                shape=plan_shapes())
    def setup(self, conc, catheter_nl, shape):
        self.catheter_nl = catheter_nl
        self.res_conc = conc
        dead_pl = (self.b.config.get("pump_path_nl", 0) + catheter_nl) * 1000
        self.fifo.append([dead_pl, conc])  # primed with the first drug
        self.command("clock.set", {"epoch_s": EPOCH0, "offset_s": 3600})
        self.command("refill", {"volume_nl": 20_000_000})
        plan = with_caps(shape, conc, catheter_nl, self.app.limits()) or with_caps(
            {"basal": {"kind": "continuous", "ng_day": MG}, "drug": DRUG, "_tight": True},
            conc, catheter_nl, self.app.limits())
        ans, _ = self.command("plan.set", {"plan": plan})
        assert not isinstance(ans, proto.CommandError), ans

    # ------------------------------------------------------------ rules
    CUT = st.one_of(st.none(), st.none(), st.integers(1, 12))

    @rule(ms=st.one_of(st.sampled_from([60_000, 600_000, HOUR, 3 * HOUR]),
                       st.integers(1, 6 * HOUR), st.integers(12 * HOUR, 26 * HOUR)))
    def wait(self, ms):
        self.advance(ms)

    @rule(ms=st.integers(1, 4 * HOUR), nth=st.integers(1, 6),
          downtime=st.sampled_from([0, 1000, 600_000, 2 * HOUR]))
    def cut_in_the_loop(self, ms, nth, downtime):
        """The power fails at a file operation of the loop (an account or state record)."""
        self.disk.nth, self.disk.raise_, self.disk.count, self.disk.image = nth, True, 0, None
        try:
            with self.disk:
                self.advance(ms)
        except Cut:
            STATS["cuts_in_loop"] += 1
            self.disk.dead = False
            self.power_cut(self.disk.image, downtime)

    @rule(downtime=st.sampled_from([0, 1000, 600_000, 2 * HOUR, 20 * HOUR]))
    def cut_between(self, downtime):
        self.power_cut(image(self.root), downtime)

    @rule(shape=plan_shapes(), cut=CUT)
    def plan_set(self, shape, cut):
        plan = with_caps(shape, self.res_conc, self.catheter_nl, self.app.limits())
        if plan is None:
            return
        self.command("plan.set", {"plan": plan}, cut_at=cut)

    @rule(vol=st.integers(5_000_000, 20_000_000), new_conc=st.one_of(st.none(),
                                                                     st.sampled_from(CONCS)),
          cut=CUT)
    def refill(self, vol, new_conc, cut):
        args = {"volume_nl": vol}
        if new_conc is not None:
            args["conc_ng_ml"] = new_conc
        old = self.res_conc
        if new_conc is not None:
            self.res_conc = new_conc  # the new drug is in the reservoir from now on
        ans, _ = self.command("refill", args, cut_at=cut)
        if isinstance(ans, proto.CommandError):
            self.res_conc = old  # refused: the clinician does not exchange the drug

    def _bolus(self, req_id, cut, new_doses=1):
        b0 = self.status()["boluses_24h"]
        ans, was_cut = self.command("bolus", {}, cut_at=cut, req_id=req_id, role="patient",
                                    new_doses=new_doses)
        return b0, ans, was_cut

    @rule(cut=CUT)
    def bolus_new(self, cut):
        self.req += 1
        rid = "b%d" % self.req
        _, ans, _ = self._bolus(rid, cut)
        self.bolus_ids.append([rid, None if isinstance(ans, proto.CommandError) else ans])

    @precondition(lambda self: self.bolus_ids)
    @rule(back=st.integers(1, 4), cut=CUT)
    def bolus_retry(self, back, cut):
        rid, first = self.bolus_ids[-min(back, len(self.bolus_ids))]
        b0, ans, was_cut = self._bolus(rid, cut, new_doses=0 if first is not None else 1)
        if first is not None:
            b1 = self.status()["boluses_24h"]
            assert was_cut or b1 <= b0, (
                "retried bolus id %s (answered %r before) was dosed again: %d -> %d boluses in "
                "24 h, answer %r" % (rid, first, b0, b1, ans))
            assert isinstance(ans, proto.CommandError) or ans == first, (
                "retried bolus id %s answered with a new dose %r (first %r)" % (rid, ans, first))

    @rule(delta_s=st.one_of(st.sampled_from([-3600, 3600, -86_400, -12 * 3600, 6 * 3600]),
                            st.integers(-2 * 86_400, 2 * 86_400)),
          offset_h=st.integers(-2, 3), cut=CUT)
    def clock_set(self, delta_s, offset_h, cut):
        ep = self.app.call("clock.get", {}, "clinician", "c", self.b.t_ms)["epoch_s"] or EPOCH0
        self.command("clock.set", {"epoch_s": ep + delta_s, "offset_s": offset_h * 3600},
                     cut_at=cut, clock=True)

    @rule(in_s=st.integers(60, 2 * 86_400), back=st.booleans(), cut=CUT)
    def daylight_saving(self, in_s, back, cut):
        c = self.app.call("clock.get", {}, "clinician", "c", self.b.t_ms)
        off, ep = c["offset_s"] or 0, c["epoch_s"] or EPOCH0
        self.command("clock.set", {"epoch_s": ep, "offset_s": off,
                                   "next_change_epoch_s": ep + in_s,
                                   "next_offset_s": off - 3600 if back else off + 3600},
                     cut_at=cut, clock=True)

    @rule(kind=st.sampled_from([None, "RESET", "LOW", "CAP_REACHED"]), cut=CUT)
    def ack(self, kind, cut):
        args = {} if kind is None else {"kind": kind}
        self.command("ack", args, cut_at=cut)

    # ------------------------------------------------------------ invariants
    @invariant()
    def caps_from_the_pulses(self):
        self.take_pulses()

    @invariant()
    def account_between_pulses_and_one_segment_per_cut(self):
        s = self.status()
        pulses = sum(seg[1] if seg is not self.b._cur else 0 for seg in self.log)
        if self.b._cur is not None:
            pulses += self.b._done(self.b.t_ms * 1000)
        acc = s["delivered_steps"]
        assert acc >= pulses, "account %d steps below the %d pulses made" % (acc, pulses)
        assert acc <= pulses + self.seg_steps * self.cuts, (
            "account %d steps above the %d pulses by more than one segment per cut (%d cuts)"
            % (acc, pulses, self.cuts))
        for k, v in s.items():
            if k.startswith("uncertain_") and isinstance(v, (int, float)):
                unit = {"steps": 1, "nl": self.step_pl / 1000,
                        "ml": self.step_pl / 1e9}.get(k.rsplit("_", 1)[1])
                if unit:
                    assert acc - v / unit <= pulses + 1e-6, (
                        "account %d - %s %r is above the %d pulses" % (acc, k, v, pulses))


def _settings():
    if LONG:
        n = int(os.environ.get("PUMPRIG_LONG_EXAMPLES", "200"))
        return settings(max_examples=n, stateful_step_count=50, deadline=None,
                        database=None, derandomize=False, report_multiple_bugs=False,
                        suppress_health_check=list(HealthCheck))
    return settings(max_examples=30, stateful_step_count=25, deadline=None, database=None,
                    derandomize=True, report_multiple_bugs=False,
                    suppress_health_check=list(HealthCheck))


SafetyMachine.TestCase.settings = _settings()
TestSafetyMachine = SafetyMachine.TestCase


# ------------------------------------------------------------------ the shrunk findings, replayed
def _replay(conc, catheter_nl, shape, rules):
    """Drive the machine through fixed rules [(name, kwargs)], checking every invariant after
    each, as hypothesis does (the counterexamples the machine found, kept as plain tests)."""
    m = SafetyMachine()
    try:
        m.setup(conc=conc, catheter_nl=catheter_nl, shape=shape)
        for name, kw in rules:
            getattr(m, name)(**kw)
            m.caps_from_the_pulses()
            m.account_between_pulses_and_one_segment_per_cut()
        return m.status()
    finally:
        m.teardown()


def test_two_refills_with_new_concentrations_in_a_row_stay_within_the_caps():
    """Finding of this machine (before the limiter): 10 mg/mL in the line, refills to 5 then
    1 mg/mL in a row; the second bridge assumed the line held 5 mg/mL while it held mostly
    10: 127.5 ug left the tip in an hour under a 125 ug hourly cap (fails so on e3c93fc). The
    limiter then held the excess (CAP_REACHED). Now the bridge doses each old drug in the line
    at its own strength, by the steps that push it out (tests/board/test_bridge.py): the
    prescribed dose, no hold, and the machine's invariants (the tip within the caps, from the
    motor's pulses) still checked by _replay."""
    shape = {"drug": DRUG, "basal": {"kind": "continuous", "ng_day": 3 * MG}, "_tight": True}
    rules = [("refill", {"vol": 20_000_000, "new_conc": 5_000_000, "cut": None}),
             ("refill", {"vol": 20_000_000, "new_conc": 1_000_000, "cut": None})]
    rules += [("wait", {"ms": 6 * HOUR})] * 8
    s = _replay(10_000_000, 250_000, shape, rules)
    assert "CAP_REACHED" not in s["alarms"], s["alarms"]


def test_an_older_bolus_id_retried_after_a_newer_one_is_not_dosed_again():
    """Finding of this machine: retrying an OLDER patient-bolus request id after a newer bolus
    (the lockout over) dosed it again: only the last id was remembered (pumpcore/patient.py).
    bolus_retry asserts the 24 h count does not rise and the answer is the first one."""
    shape = {"drug": DRUG, "basal": {"kind": "continuous", "ng_day": MG}, "_tight": False,
             "patient": {"ng": MG // 10, "dur_s": 60, "lockout_s": 600, "max_24h": 8}}
    rules = [("wait", {"ms": HOUR}), ("bolus_new", {"cut": None}), ("wait", {"ms": HOUR}),
             ("bolus_new", {"cut": None}), ("wait", {"ms": HOUR}),
             ("bolus_retry", {"back": 2, "cut": None}),
             ("cut_between", {"downtime": 1000}),
             ("bolus_retry", {"back": 2, "cut": None}), ("bolus_retry", {"back": 1, "cut": 3})]
    s = _replay(10_000_000, 100_000, shape, rules)
    assert s["boluses_24h"] == 2


def test_a_plan_change_keeps_the_drug_already_given_in_the_window():
    """The design choice across plan.set: the firmware keeps the limiter's ledger (docs/
    architecture.md, dose limiter, Persistence), so the machine checks the strictest reading:
    a new plan's caps bound ALL drug in the window ending at each of its pulses, the old plan's
    included. 3 mg/day for 12 h, then a 0.1 mg/day plan with the tightest caps it validates
    under: the 1.5 mg already given fill its 24 h cap, so delivery is held."""
    big = {"drug": DRUG, "basal": {"kind": "continuous", "ng_day": 3 * MG}, "_tight": False}
    small = {"drug": DRUG, "basal": {"kind": "continuous", "ng_day": MG // 10}, "_tight": True}
    rules = [("wait", {"ms": 12 * HOUR}), ("plan_set", {"shape": small, "cut": None}),
             ("wait", {"ms": 6 * HOUR}), ("wait", {"ms": 20 * HOUR})]
    s = _replay(1_000_000, 100_000, big, rules)
    assert "CAP_REACHED" in s["alarms"]
