"""Issue 12: the loop cannot die, Ctrl-C is data while therapy runs, firmware input bounds.

Runs under CPython and MicroPython. Faults are injected from the test (a FakeBoard method that
raises), never from resident code; the main loop's handling is main.py's, repeated here:
step, and on an exception App.crash then board.reset().
"""

from _util import login, rmtree, tmpdir
from fakeboard import FakeBoard, run_until
from pumpcore import evlog, proto
from pumpcore.app import App

DAY = 86_400_000
EPOCH = 1_767_225_600
KEY = "11" * 32  # the clinician's key: requests over the line come from a signed session
P1 = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
      "basal": {"kind": "continuous", "ng_day": 400_000}}


def _app(root):
    b = FakeBoard(root=root + "/")
    return App(b, keys={"clinician": KEY}), b


def _call(app, cmd, args=None, req="r1"):
    return app.call(cmd, args or {}, "clinician", req, app.board.t_ms)


def _frames(tx, kinds="="):
    """The frames written, of the given kinds (default: answers only)."""
    out = []
    for ln in tx.split(b"\n"):
        if ln:
            f = proto.decode(ln)
            if f.kind in kinds:
                out.append(f)
    return out


def _running(root):
    app, b = _app(root)
    b.rtc = EPOCH
    _call(app, "clock.set", {"epoch_s": EPOCH, "offset_s": 0})
    _call(app, "refill", {"volume_nl": 20_000_000})
    _call(app, "plan.set", {"plan": P1})
    return app, b


def _loop(app, b, t_end):
    """main.py's loop up to t_end: a step that raises is a crash (App.crash, board.reset)."""
    try:
        run_until(app, b, t_end)
        return False
    except Exception as e:
        app.crash(e)
        b.reset()
        return True


def test_oversized_argument_name_gets_a_bounded_answer():
    """Finding 1: a `hello` with a 990-character argument name made the BAD_ARGS answer too
    long to encode; the error path raised out of the line handler and the firmware fell to
    the REPL. Now the answer quotes a bounded prefix and the loop goes on."""
    root = tmpdir()
    try:
        app, b = _app(root)
        line = proto.encode_request("h1", "hello", {"x" * 990: 1})
        assert len(line) < proto.MAX_LINE
        b.rx = line
        app.step(b.t_ms)
        fs = _frames(b.tx)
        assert len(fs) == 1 and fs[0].id == "h1"
        assert fs[0].body["code"] == proto.BAD_ARGS
        assert len(fs[0].body["message"]) <= proto.MAX_MESSAGE
        # and the line still works
        b.tx = b""
        b.rx = proto.encode_request("h2", "hello", {})
        app.step(b.t_ms)
        assert _frames(b.tx)[0].name == "ok"
    finally:
        rmtree(root)


def test_error_messages_are_capped():
    """Finding 1: no error answer can exceed a frame, whatever its message quotes."""
    line = proto.encode_err("a" * proto.MAX_ID, proto.PLAN_INVALID, "\u00e9" * 5000)
    assert len(line) <= proto.MAX_LINE
    f = proto.decode(line)
    assert f.error is None and len(f.body["message"]) == proto.MAX_MESSAGE


def test_integer_arguments_are_bounded():
    """Finding 8: `log` since=-1, refill_by_epoch_s=10**18 and request id 0 were accepted."""
    root = tmpdir()
    try:
        app, b = _app(root)
        cs = login(app, KEY)  # the argument checks come after the role check
        reqs = [("l1", "log", {"since": -1}), ("r1", "refill", {"volume_nl": 1_000_000,
                                                               "refill_by_epoch_s": 10**18 - 1}),
                ("c1", "clock.set", {"epoch_s": EPOCH, "offset_s": True}),
                ("m1", "motor.run", {"steps": 10**15}), ("l2", "log", {"limit": 0}),
                ("0", "status", {})]
        for rid, cmd, args in reqs:
            b.tx = b""
            b.rx = cs.line(rid, cmd, args)
            app.step(b.t_ms)
            fs = _frames(b.tx)
            assert len(fs) == 1 and fs[0].name == "err", (cmd, fs)
            assert fs[0].body["code"] == proto.BAD_ARGS, (cmd, fs[0].body)
            assert len(fs[0].body["message"]) <= proto.MAX_MESSAGE
        assert app.reservoir.refill_by_epoch_s is None
        r = proto.INT_RANGES
        for i in range(0, len(r), 3):
            assert isinstance(r[i], str) and r[i + 1] <= r[i + 2] < 2**62
    finally:
        rmtree(root)


def test_ctrl_c_is_data_while_therapy_runs_and_maintenance_opens_it():
    """Finding 3: Ctrl-C interrupts the firmware only while therapy is stopped; a clinician's
    `maintenance` stops therapy (event, MAINTENANCE alarm) and opens it."""
    root = tmpdir()
    try:
        app, b = _app(root)
        assert b.kbd is True  # no plan: stopped, Ctrl-C works as before
        app, b = _running(root)
        run_until(app, b, 60_000)
        assert app.therapy == "running" and b.kbd is False
        # a 0x03 byte in the middle of a frame is dropped, the frame answered
        b.tx = b""
        line = proto.encode_request("s1", "hello", {})
        b.rx = line[:5] + b"\x03" + line[5:]
        app.step(b.t_ms)
        assert _frames(b.tx)[0].name == "ok" and app.therapy == "running"
        _call(app, "therapy.stop")
        run_until(app, b, 61_000)
        assert b.kbd is True
        _call(app, "therapy.resume")
        run_until(app, b, 62_000)
        assert b.kbd is False
        res = _call(app, "maintenance")
        run_until(app, b, 63_000)
        assert res["therapy"] == "stopped" and app.therapy == "stopped" and b.kbd is True
        assert "MAINTENANCE" in app.alarms.active()
        assert [e for e in evlog.events(app.events) if e["kind"] == "maintenance"]
        assert app.seg is None
        _call(app, "therapy.resume")
        run_until(app, b, 64_000)
        assert not app.alarms.condition_active("MAINTENANCE") and b.kbd is False
    finally:
        rmtree(root)


def test_a_crash_stops_records_resets_and_resumes_from_the_account():
    """Finding 1: an exception inside the loop (here the battery ADC raising) stops the motor,
    logs a FAULT event with the exception's type and place, raises the critical FAULT alarm,
    persists, and resets; the next boot resumes from the account."""
    root = tmpdir()
    try:
        app, b = _running(root)
        run_until(app, b, DAY // 2)

        def boom():
            raise ValueError("ADC on fire")

        b.battery_mv = boom
        b.rtc = EPOCH + DAY // 2000
        assert _loop(app, b, DAY // 2 + 3_700_000)
        t = b.t_ms
        assert b.resets == 1 and app.seg is None and not b.motor_busy()
        ev = [e for e in evlog.events(app.events) if e["kind"] == "fault"]
        assert len(ev) == 1 and ev[0]["data"]["type"] == "ValueError", ev
        assert "ADC on fire" in ev[0]["data"]["text"] and ev[0]["data"]["crashes"] == 1
        assert "FAULT" in app.alarms.active()
        steps = app.steps
        assert steps == b.pulses_at(t)  # stopped with an exact account
        # the reset: a new App on the same records, the ADC working again
        del b.battery_mv
        b.t_ms = t + 2000
        app2 = App(b, keys={})
        assert app2.therapy == "running" and app2.steps == steps
        assert "FAULT" in app2.alarms.active() and app2.alarms.level() == 2
        run_until(app2, b, t + DAY)
        # it goes on at the plan's rate from where it stopped: 800 steps a day
        assert 795 <= b.pulses_at(b.t_ms) - steps <= 801
    finally:
        rmtree(root)


def test_repeated_crashes_reach_the_boot_loop_guard():
    """Finding 1: three crashes within 10 minutes keep the pump in its safe state (motor off,
    FAULT sounding, status/log answered, other commands refused) until a clinician leaves it."""
    root = tmpdir()
    try:
        app, b = _running(root)
        run_until(app, b, 60_000)

        def boom():
            raise KeyError("x")

        t = 60_000
        for i in range(3):
            app.next_battery_ms = b.t_ms  # the next step samples the battery
            b.battery_mv = boom
            b.rtc = EPOCH + t // 1000
            assert _loop(app, b, b.t_ms + 1)
            del b.battery_mv
            t += 120_000
            b.t_ms = t
            app = App(b, keys={})
            if i < 2:
                assert app.therapy == "running"
        assert b.resets == 3
        assert app.therapy == "safe" and app.safe_reason.startswith("boot loop")
        run_until(app, b, t + 3_600_000)
        assert app.seg is None and b.pulses_at(b.t_ms) == app.steps
        st = app.call("status", {}, "clinician", "s", b.t_ms)
        assert st["therapy"] == "safe" and "FAULT" in st["alarms"]
        assert [f for tt, f in b.tones if tt >= t and f]  # the FAULT alarm sounds
        assert app.call("log", {}, "patient", "l", b.t_ms)["events"]
        for cmd, args in (("plan.set", {"plan": P1}), ("bolus", {}), ("motor.run", {"steps": 5})):
            try:
                app.call(cmd, args, "clinician", "x", b.t_ms)
                raise AssertionError(cmd + " was not refused")
            except proto.CommandError as e:
                assert e.code == proto.SAFE_STATE and "boot-loop" in e.message
        # still safe after another reset
        app = App(b, keys={})
        assert app.therapy == "safe"
        _call(app, "ack", {"kind": "FAULT"})
        assert app.therapy == "stopped" and "FAULT" not in app.alarms.active()
        _call(app, "therapy.resume")
        assert app.therapy == "running"
        app = App(b, keys={})  # the count started again
        assert app.therapy == "running"
    finally:
        rmtree(root)


def test_a_command_that_raises_is_answered_then_handled_as_a_fault():
    """Finding 1: an unexpected exception in a command is answered INTERNAL, then taken by the
    loop's fault handling (FAULT, reset), not left half-done with therapy running on."""
    root = tmpdir()
    try:
        app, b = _running(root)
        run_until(app, b, 60_000)
        cs = login(app, KEY)

        def broken(app, args, now, req_id):
            raise TypeError("bug")

        from pumpcore import clinician

        good = clinician.calib_get
        clinician.calib_get = broken
        try:
            b.rx = cs.line("c1", "calib.get", {})
            assert _loop(app, b, 61_000)
        finally:
            clinician.calib_get = good
        fs = _frames(b.tx, "=!")
        errs = [f for f in fs if f.kind == "=" and f.id == "c1"]
        assert errs and errs[0].body["code"] == proto.INTERNAL
        assert [f for f in fs if f.kind == "!" and f.name == "fault"]
        assert b.resets == 1 and "FAULT" in app.alarms.active()
    finally:
        rmtree(root)
