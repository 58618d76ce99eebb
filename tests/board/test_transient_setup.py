"""The rarely run code of the schedule and the alarms lives in pumpcore.planning (compiling a
plan's start, a bolus's windows, the refill bridge, load_dict/shift at boot) and
pumpcore.alarmlist (restore at boot, the `alarms` list, ack) and pumpcore.settings (the tone
patterns and the battery and reservoir settings at boot), imported for
the call. Under MicroPython a precompiled module (.mpy; here the sources stand in for it, with
app._DROP_SOURCE) leaves sys.modules after the boot and after each command that loaded it, and
the pump works as before. CPython keeps the modules loaded.

Runs under CPython and MicroPython.
"""

import sys

from _util import ClientSession, forget_module, rmtree, tmpdir
from fakeboard import FakeBoard
from pumpcore import app as appmod
from pumpcore import loader, proto

RARE = ("pumpcore.planning", "pumpcore.alarmlist", "pumpcore.settings")
MPY = sys.implementation.name == "micropython"
EPOCH = 1_767_225_600
PLAN = {"drug": "baclofen", "conc_ng_ml": 2_000_000, "catheter_nl": 100_000,
        "basal": {"kind": "continuous", "ng_day": 400_000},
        "start": {"kind": "prime", "pump_nl": 200_000, "catheter_nl": 100_000,
                  "nl_min": 10_000}}




def _loaded():
    return [m for m in RARE if m in sys.modules]


def _check(what):
    if MPY:
        assert _loaded() == [], (what, _loaded())


class Rig:
    def __init__(self, root):
        self.b = FakeBoard(root=root + "/")
        self.app = appmod.App(self.b, keys={"clinician": "11" * 32})
        _check("boot")
        self.n = 0
        self.cs = ClientSession()  # logged in as a clinician (see test_session)
        hello = self.frame("hello", {}, 0)
        self.frame("auth", self.cs.auth_args("11" * 32, hello, "clinician"), 0)
        self.cs.logged_in()

    def frame(self, cmd, args, now):
        """One request through the board's serial and App.step, as main.py's loop does."""
        self.n += 1
        b = self.b
        b.rx = self.cs.line("q%d" % self.n, cmd, args)
        b.t_ms = now
        self.app.step(now)
        out, b.tx = b.tx, b""
        fs = [proto.decode(x + b"\n") for x in out.split(b"\n") if x.startswith(b"=")]
        assert len(fs) == 1, fs
        f = fs[0]
        assert f.name == "ok", (cmd, f.body)
        _check(cmd)
        return f.body


def test_schedule_and_alarm_setup_leave_after_boot_and_commands():
    old = loader.DROP_SOURCE
    loader.DROP_SOURCE = True
    if MPY:
        for name in RARE:
            forget_module(name)
    root = tmpdir()
    try:
        r = Rig(root)
        app = r.app
        r.frame("clock.set", {"epoch_s": EPOCH, "offset_s": 0}, 1000)
        r.frame("refill", {"volume_nl": 10_000_000}, 2000)
        r.frame("plan.set", {"plan": PLAN}, 3000)
        sched = app.sched
        assert sched.start_windows and sched.basal_start_ms > 3000  # the prime was compiled
        assert app.alarms.level() == 0
        # a new concentration: the old one is dosed until the pump path and catheter are through
        r.frame("refill", {"volume_nl": 10_000_000, "conc_ng_ml": 4_000_000}, 4000)
        # the old drug fills the line: dosed at its strength for the steps that push it out
        dead_steps = (app.cfg["pump_path_nl"] + PLAN.get("catheter_nl", 0)) * 1000 // app.step_pl
        # (no step was made before the refill: the bridge ends dead_steps from 0)
        assert app.sched.bridges == [[2_000_000, dead_steps]], app.sched.bridges
        body = r.frame("alarms", {}, 5000)
        assert body == {"alarms": []}
        app.alarms.raise_("CLOCK", EPOCH + 5)  # cleared by clock.set only
        body = r.frame("alarms", {}, 6000)
        assert [a["kind"] for a in body["alarms"]] == ["CLOCK"] and not body["alarms"][0]["acked"]
        assert r.frame("ack", {"kind": "CLOCK"}, 7000)
        assert app.alarms.to_dict() == {"alarms": [["CLOCK", EPOCH + 5, True, True, None]]}
        saved = app.sched.to_dict()
        app.save_state(8000)
        # a reset: the state record is restored (alarms, schedule load_dict and shift)
        r2 = Rig(root)
        app2 = r2.app
        assert "CLOCK" in app2.alarms and "RESET" in app2.alarms
        s2 = app2.sched.to_dict()
        delta = s2["program_ms"] - saved["program_ms"]
        assert s2["bridges"] == saved["bridges"]  # in steps: board time does not move them
        assert s2["start_windows"] == [[s + delta, e + delta, v]
                                       for s, e, v in saved["start_windows"]]
        body = r2.frame("alarms", {}, 100)
        assert sorted(a["kind"] for a in body["alarms"]) == ["CLOCK", "RESET"]
        if not MPY:
            assert _loaded() == list(RARE)  # CPython keeps them
    finally:
        loader.DROP_SOURCE = old
        rmtree(root)


def test_the_schedule_code_loads_alone_at_a_restore():
    """Issue 11, finding 8: at a restore the schedule's code (pumpcore.planning) was loaded
    while the restore's other per-call modules (evlog, limitline, alarmlist, batterystate) were
    still in the heap: the restore after a power cut then crashed out of memory in a 128 KB
    heap (docs/benchmarks.md, memory-restart). Under MicroPython the restore now drops them
    first. Fails on the code before it: all four were still loaded when the Schedule was
    made."""
    from pumpcore import schedule

    old = loader.DROP_SOURCE
    loader.DROP_SOURCE = True
    root = tmpdir()
    seen = []
    orig = schedule.Schedule

    class Seen(orig):
        def __init__(self, *a):
            seen.append([m for m in ("pumpcore.evlog", "pumpcore.limitline", "pumpcore.alarmlist",
                                     "pumpcore.batterystate") if m in sys.modules])
            orig.__init__(self, *a)

    try:
        r = Rig(root)
        r.frame("clock.set", {"epoch_s": EPOCH, "offset_s": 0}, 1000)
        r.frame("refill", {"volume_nl": 10_000_000}, 2000)
        r.frame("plan.set", {"plan": PLAN}, 3000)
        r.app.save_state(4000)
        forget_module("pumpcore.restore")  # imported again below: it takes Seen
        schedule.Schedule = Seen
        app2 = Rig(root).app
        schedule.Schedule = orig
        assert app2.therapy == "running" and app2.plan == r.app.plan
        assert len(seen) == 1, seen
        if MPY:
            assert seen[0] == [], seen
        else:
            assert seen[0] == ["pumpcore.evlog", "pumpcore.limitline", "pumpcore.alarmlist",
                               "pumpcore.batterystate"], seen  # CPython keeps them
    finally:
        schedule.Schedule = orig
        forget_module("pumpcore.restore")
        loader.DROP_SOURCE = old
        rmtree(root)
