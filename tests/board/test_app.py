"""The pump application on a fake board: plans, reservoir alarms, boluses, resets.

Runs under CPython and MicroPython. Delivery is counted by the fake board's pulse timing, not
by the app's own account.
"""

from _util import forget_module, raises, rmtree, tmpdir
from fakeboard import FakeBoard, run_until
from pumpcore import evlog, loader, proto
from pumpcore import plan as planmod
from pumpcore.app import App

DAY = 86_400_000

P1 = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
      "basal": {"kind": "continuous", "ng_day": 400_000}}
P5 = {"drug": "morphine", "conc_ng_ml": 10_000_000,
      "basal": {"kind": "continuous", "ng_day": 2_000_000},
      "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 7200, "max_24h": 6},
      "caps": {"ng_24h": 3_000_000}}


def _app(root=None):
    root = root or tmpdir()
    b = FakeBoard(root=root + "/")
    return App(b, keys={}), b, root


def _call(app, cmd, args=None, req="r1"):
    return app.call(cmd, args or {}, "clinician", req, app.board.t_ms)


def test_p1_low_at_day_90_exactly():
    app, b, root = _app()
    try:
        assert app.plan_crc() == "00000000"  # no plan yet
        _call(app, "clock.set", {"epoch_s": 1_767_225_600, "offset_s": 0})
        _call(app, "refill", {"volume_nl": 20_000_000})
        _call(app, "plan.set", {"plan": P1})
        assert app.plan_crc() == planmod.crc(app.plan) != "00000000"
        run_until(app, b, 90 * DAY - 60_000)
        assert "LOW" not in app.alarms.active()
        run_until(app, b, 90 * DAY + 1)
        assert "LOW" in app.alarms.active()
        assert b.pulses_at(90 * DAY) == 72_000  # 18 mL at 0.25 µL/step, counted by the board
        low = [e for e in evlog.events(app.events) if e["kind"] == "alarm.raised"
               and e["data"]["kind"] == "LOW"]
        assert low and abs(low[0]["ms"] - 90 * DAY) <= 1, low
        st = app.call("status", {}, "clinician", "s", b.t_ms)
        assert st["reservoir_nl"] == 2_000_000
        assert st["stall_detect"] is None  # a board without a driver UART
        # EMPTY at 1.0 mL five days later, then delivery stops (on_empty = stop)
        run_until(app, b, 96 * DAY)
        assert "EMPTY" in app.alarms.active()
        assert b.pulses_at(96 * DAY) == 76_000
    finally:
        rmtree(root)


def test_invalid_plan_refused_running_plan_untouched():
    app, b, root = _app()
    try:
        _call(app, "plan.set", {"plan": P1})
        crc = app.plan_crc()
        bad = dict(P1)
        bad["basal"] = {"kind": "continuous", "ng_day": -5}
        e = raises(proto.CommandError, _call, app, "plan.set", {"plan": bad})
        assert e.code == proto.PLAN_INVALID and "basal.ng_day" in e.message
        assert app.plan_crc() == crc
        e = raises(proto.CommandError, _call, app, "plan.set", {"plan": dict(P1, extra=1)})
        assert "unknown key" in e.message
        assert app.plan_crc() == crc
    finally:
        rmtree(root)


def test_patient_bolus_lockout_max_and_retry():
    app, b, root = _app()
    try:
        _call(app, "refill", {"volume_nl": 20_000_000})
        _call(app, "plan.set", {"plan": P5})
        # a lockout starts right after programming
        e = raises(proto.CommandError, app.call, "bolus", {}, "patient", "b1", 0)
        assert e.code == proto.LOCKOUT
        run_until(app, b, 2 * 3_600_000)
        r1 = app.call("bolus", {}, "patient", "b2", b.t_ms)
        assert r1["volume_nl"] == 10_000  # 0.1 mg at 10 mg/mL
        again = app.call("bolus", {}, "patient", "b2", b.t_ms + 5)  # a retry: same answer
        assert again == r1 and len(app.boluses) == 1
        run_until(app, b, 3 * 3_600_000)
        e = raises(proto.CommandError, app.call, "bolus", {}, "patient", "b3", b.t_ms)
        assert e.code == proto.LOCKOUT
        for i in range(5):
            run_until(app, b, (4 + 2 * i) * 3_600_000)
            app.call("bolus", {}, "patient", "c%d" % i, b.t_ms)
        run_until(app, b, 16 * 3_600_000)
        e = raises(proto.CommandError, app.call, "bolus", {}, "patient", "c9", b.t_ms)
        assert e.code == proto.MAX_24H
        # 16 h of 2 mg/day basal (0.2 mL/day) + 6 boluses of 10 µL, within one step
        ideal_pl = 200_000 * 1000 * 16 // 24 + 6 * 10_000_000
        assert abs(b.pulses_at(b.t_ms) * 250_000 - ideal_pl) <= 250_000
    finally:
        rmtree(root)


def test_an_older_bolus_id_retried_after_a_newer_bolus_is_not_dosed_again():
    """Finding of the safety state machine (issue 11): only the last patient-bolus request id
    was remembered, so retrying an OLDER id after a newer bolus (the lockout over) dosed it a
    second time, also across a reset. Now the ids of the last 24 h's boluses are kept."""
    app, b, root = _app()
    try:
        _call(app, "clock.set", {"epoch_s": 1_767_225_600, "offset_s": 0})
        _call(app, "refill", {"volume_nl": 20_000_000})
        _call(app, "plan.set", {"plan": P5})
        run_until(app, b, 2 * 3_600_000)
        r1 = app.call("bolus", {}, "patient", "b1", b.t_ms)
        run_until(app, b, 4 * 3_600_000)
        r2 = app.call("bolus", {}, "patient", "b2", b.t_ms)
        assert r2 != r1
        run_until(app, b, 6 * 3_600_000)  # the lockout is over
        assert app.call("bolus", {}, "patient", "b1", b.t_ms) == r1
        assert len(app.boluses) == 2
        app2 = App(FakeBoard(root=root + "/"), keys={})  # a reset
        assert app2.call("bolus", {}, "patient", "b1", 0) == r1
        assert app2.call("bolus", {}, "patient", "b2", 0) == r2
        assert len(app2.boluses) == 2
    finally:
        rmtree(root)


def test_reset_resumes_plan_and_never_undercounts():
    app, b, root = _app()
    try:
        _call(app, "refill", {"volume_nl": 20_000_000})
        _call(app, "plan.set", {"plan": P1})
        run_until(app, b, DAY + 12_345)
        pulsed = b.pulses_at(b.t_ms)
        # power cut: a new app on the same files, board time restarted at 0
        b2 = FakeBoard(root=root + "/")
        app2 = App(b2, keys={})
        assert app2.therapy == "running" and app2.plan_crc() == planmod.crc(planmod.validate(P1))
        assert app2.steps >= pulsed
        assert app2.steps - pulsed <= 40  # one segment of at most 10 µL
        assert "RESET" in app2.alarms.active()
    finally:
        rmtree(root)


def test_corrupt_therapy_record_goes_to_safe_state():
    app, b, root = _app()
    try:
        _call(app, "refill", {"volume_nl": 20_000_000})
        _call(app, "plan.set", {"plan": P1})
        path = root + "/data/plan"
        f = open(path, "rb")
        data = bytearray(f.read())
        f.close()
        data[10] ^= 0x04
        f = open(path, "wb")
        f.write(data)
        f.close()
        b2 = FakeBoard(root=root + "/")
        app2 = App(b2, keys={})
        assert app2.therapy == "safe" and "MEMORY" in app2.alarms.active()
        app2.step(0)
        assert b2.seg is None  # the motor never runs on garbage
        run_until(app2, b2, DAY)
        assert b2.pulses_at(DAY) == 0
    finally:
        rmtree(root)


def _frames(app, line, now):
    from pumpcore import proto as p

    app.board.rx = line  # through the board's serial, as main.py's loop reads it
    app.board.t_ms = now
    app.step(now)
    out, app.board.tx = app.board.tx, b""
    return [p.decode(x + b"\n") for x in out.split(b"\n") if x.startswith(b"=")]


def _login(app, key_hex, now, n):
    from _util import ClientSession

    hello = _frames(app, proto.encode_request("h%d" % n, "hello", {}), now)[0].body
    args = ClientSession().auth_args(key_hex, hello, "clinician")
    return _frames(app, proto.encode_request("a%d" % n, "auth", args), now)[0]


def test_failed_logins_stay_throttled_across_a_reset():
    root = tmpdir()
    keys = {"clinician": "11" * 32, "patient": "22" * 32}
    try:
        b = FakeBoard(root=root + "/")
        app = App(b, keys=keys)
        r = _login(app, "33" * 32, 0, 1)  # a wrong key
        assert r.body["code"] == proto.AUTH_FAILED
        # power cut: board time restarts; the right key right away is still refused
        b2 = FakeBoard(root=root + "/")
        app2 = App(b2, keys=keys)
        r = _login(app2, "11" * 32, 0, 2)
        assert r.name == "err" and r.body["code"] == proto.THROTTLED
        r = _login(app2, "11" * 32, 1500, 3)  # once the delay has passed
        assert r.name == "ok" and r.body["role"] == "clinician"
        # the rig-wide ceiling survives a reset too (issue 12, finding 4)
        for i in range(10):
            _login(app2, "33" * 32, 2000 + 70_000 * i, 10 + i)
        assert app2.server.guard[0] > 2000 + 70_000 * 9
        app3 = App(FakeBoard(root=root + "/"), keys=keys)
        assert app3.server.guard[0] > 0
    finally:
        rmtree(root)


def _admin_round(drop_source):
    """plan.set (accepted, then refused; pumpcore.program) and clock.get (pumpcore.clinician)
    through overlays; returns (either still loaded, heap grown in bytes or None off
    MicroPython)."""
    import gc
    import sys


    mpy = sys.implementation.name == "micropython"
    for m in ("clinician", "program"):  # not loaded when the pump boots, as on a board
        forget_module("pumpcore." + m)
    old = loader.DROP_SOURCE
    loader.DROP_SOURCE = drop_source
    app, b, root = _app()
    try:
        _call(app, "clock.set", {"epoch_s": 1_767_225_600, "offset_s": 0})
        gc.collect()
        before = gc.mem_alloc() if mpy else 0
        res = _call(app, "plan.set", {"plan": P1})
        assert res["plan_crc"] == planmod.crc(app.plan)
        # refused inside the overlay: the error comes out whole
        e = raises(proto.CommandError, _call, app, "plan.set", {"plan": {"drug": "x"}})
        assert e.code == proto.PLAN_INVALID
        assert _call(app, "clock.get")["set"] is True
        gc.collect()
        loaded = "pumpcore.clinician" in sys.modules or "pumpcore.program" in sys.modules
        return loaded, (gc.mem_alloc() - before) if mpy else None
    finally:
        loader.DROP_SOURCE = old
        rmtree(root)


def test_admin_commands_load_for_one_call_and_leave_the_heap():
    """Clinician commands run from pumpcore.clinician, imported for the call. Under MicroPython a
    precompiled clinician (.mpy; here the sources stand in for it) is dropped after the call and
    its heap comes back; CPython keeps it."""
    import sys

    mpy = sys.implementation.name == "micropython"
    loaded, grown = _admin_round(drop_source=True)
    assert loaded != mpy
    if mpy:
        # the plan record, the schedule and the events: about 2 KB; clinician alone is ~8 KB
        assert grown < 4096, grown


def test_admin_from_sources_stays_loaded():
    """A .py clinician is not dropped: compiling it again at every command would cost more heap
    than keeping it."""
    loaded, grown = _admin_round(drop_source=False)
    assert loaded


def test_a_refused_refill_changes_nothing():
    app, b, root = _app()
    try:
        _call(app, "clock.set", {"epoch_s": 1_767_225_600, "offset_s": 0})
        _call(app, "refill", {"volume_nl": 10_000_000})
        _call(app, "plan.set", {"plan": P1})
        run_until(app, b, DAY)
        before = app.call("status", {}, "clinician", "s", b.t_ms)
        crc = app.plan_crc()
        # a concentration at which the plan would need more than the mechanism can pump
        e = raises(proto.CommandError, _call, app, "refill",
                   {"volume_nl": 20_000_000, "conc_ng_ml": 1})
        assert e.code == proto.PLAN_INVALID
        e = raises(proto.CommandError, _call, app, "refill",
                   {"volume_nl": 20_000_000, "refill_by_epoch_s": 1_000})
        assert e.code == proto.BAD_ARGS
        after = app.call("status", {}, "clinician", "s", b.t_ms)
        assert app.plan_crc() == crc
        assert after["reservoir_nl"] == before["reservoir_nl"] < 10_000_000
        assert after["therapy"] == "running"
        # the same refill, valid, goes through
        assert _call(app, "refill", {"volume_nl": 20_000_000})["reservoir_nl"] == 20_000_000
    finally:
        rmtree(root)


def test_clock_set_refuses_missing_or_non_integer_times_and_keeps_the_clock():
    app, b, root = _app()
    try:
        _call(app, "clock.set", {"epoch_s": 1_767_225_600, "offset_s": 3600})
        before = _call(app, "clock.get")
        for bad in ({"epoch_s": None, "offset_s": 0}, {"epoch_s": 1_767_225_600, "offset_s": None},
                    {"epoch_s": True, "offset_s": 0}, {"epoch_s": "1767225600", "offset_s": 0},
                    {"epoch_s": 1_767_225_600, "offset_s": 15 * 3600},
                    {"epoch_s": 1_767_225_600, "offset_s": 0, "next_offset_s": 1.5}):
            e = raises(proto.CommandError, _call, app, "clock.set", bad)
            assert e.code == proto.BAD_ARGS, (bad, e.code)
        assert _call(app, "clock.get") == before
    finally:
        rmtree(root)
