"""All-or-nothing changes (issue 11, findings 4, 5 and 6): power cuts inside refill and
plan.set, retried requests, and records missing at boot.

Runs under CPython and MicroPython. A power cut is injected at the Nth file operation of the
command (a write torn half way, or a rename not done), for every N the command has; then a new
App boots on the same files (board time restarted at 0). The stored state it finds must be the
one before the command or the one after it, never a mix; and the same request (same id)
retried after the restart must complete it: the bridge bolus of a refill with a new
concentration, the start bolus of a new plan.
"""

from _util import rmtree, tmpdir
from fakeboard import FakeBoard, run_until
from pumpcore import proto
from pumpcore.app import App

HOUR = 3_600_000
DAY = 24 * HOUR
OLD_CONC = 2_000_000  # 2000 mcg/mL
NEW_CONC = 500_000
P1 = {"drug": "baclofen", "conc_ng_ml": OLD_CONC, "catheter_nl": 100_000,
      "basal": {"kind": "continuous", "ng_day": 400_000}}
P2 = {"drug": "baclofen", "conc_ng_ml": OLD_CONC, "catheter_nl": 100_000,
      "basal": {"kind": "continuous", "ng_day": 500_000},
      "start": {"kind": "bolus", "ng": 50_000, "dur_s": 600}}
BRIDGE_NL = 200_000 + 100_000  # pump path (fakeboard) + catheter
FILL_NL = 20_000_000
REFILL_NL = 18_000_000
RECORDS = ("plan", "state", "count", "calib", "head")


class _Cut(Exception):
    """The power failed here."""


def _arm(app, nth):
    """The nth file operation of app's store from now on (a record write or a rename) is
    where the power fails: a write leaves half its bytes, a rename is not done. Returns a
    list whose first item counts the operations done so far."""
    st = app.store
    real_write = getattr(st, "_write_file", None)
    real_rename = getattr(st, "rename", None)
    n = [0]

    def write_file(path, write):
        n[0] += 1
        if n[0] < nth:
            if real_write is None:
                f = open(path, "wb")
                write(f)
                return f.close()
            return real_write(path, write)
        import io

        buf = io.BytesIO()
        write(buf)
        data = buf.getvalue()
        f = open(path, "wb")
        f.write(data[: len(data) // 2])
        f.close()
        raise _Cut()

    def rename(src, path):
        n[0] += 1
        if n[0] < nth:
            import os

            return (real_rename or os.rename)(src, path)
        raise _Cut()

    if hasattr(st, "_write_file"):
        st._write_file = write_file
        st.rename = rename
    else:  # a store with one atomic write per record (the code before issue 11)
        def write_atomic(name, write):
            path = st.path(name)
            write_file(path + ".tmp", write)
            rename(path + ".tmp", path)

        st._write_atomic = write_atomic
    return n


def _running(root, plan=P1):
    b = FakeBoard(root=root + "/")
    app = App(b, keys={})
    app.call("calib.set", {"step_pl": 250_000}, "clinician", "c", 0)
    app.call("refill", {"volume_nl": FILL_NL}, "clinician", "f", 0)
    app.call("plan.set", {"plan": plan}, "clinician", "p", 0)
    run_until(app, b, 5 * HOUR + 12_345)
    return app, b


def _boot(root):
    b = FakeBoard(root=root + "/")
    return App(b, keys={}), b


def _refill_view(app):
    """'before' or 'after' the refill with the new concentration; anything else is a mix."""
    conc = app.plan["conc_ng_ml"]
    vol = app.reservoir.volume_nl
    live = [c for c, end in app.sched.bridges if end > app.sched.steps]
    bridge = live[-1] if live else 0
    if conc == OLD_CONC and bridge == 0 and vol < FILL_NL - 10_000 and vol > REFILL_NL:
        return "before"
    if conc == NEW_CONC and bridge == OLD_CONC and REFILL_NL - 20_000 <= vol <= REFILL_NL:
        return "after"
    return "mixed: conc %d, bridge %d, reservoir %d nL" % (conc, bridge, vol)


def test_power_cut_at_every_point_of_a_refill_with_a_new_concentration():
    """Finding 4: a cut inside `refill --conc` left the new concentration with the old
    reservoir and no bridge; the retry then answered a bridge of 0."""
    args = {"volume_nl": REFILL_NL, "conc_ng_ml": NEW_CONC}
    seen = {}
    nth = 1
    while True:
        root = tmpdir()
        try:
            app, b = _running(root)
            ops = _arm(app, nth)
            try:
                res = app.call("refill", args, "clinician", "rq-1", b.t_ms)
                assert res["bridge_nl"] == BRIDGE_NL
                break  # the command had fewer operations than nth: every point was cut
            except _Cut:
                pass
            app2, b2 = _boot(root)
            view = _refill_view(app2)
            assert view in ("before", "after"), ("cut at op %d: %s" % (nth, view))
            seen[view] = seen.get(view, 0) + 1
            assert app2.therapy == "running" and "MEMORY" not in app2.alarms.active(), nth
            # the client retries the request it had no answer to, with the same id
            res = app2.call("refill", args, "clinician", "rq-1", 0)
            assert res == {"reservoir_nl": REFILL_NL, "bridge_nl": BRIDGE_NL}, (nth, res)
            assert _refill_view(app2) == "after", nth
            assert app2.sched.activity(0) == "bridge", nth
            # the bridge pushes out the old drug at the old concentration
            app2.step(0)
            run_until(app2, b2, HOUR)
            assert app2.sched.conc_at(HOUR) == OLD_CONC
            # and a second retry changes nothing more
            vol = app2.reservoir.volume_nl
            res2 = app2.call("refill", args, "clinician", "rq-1", b2.t_ms)
            assert res2 == res and app2.reservoir.volume_nl == vol
            assert ops[0] == nth
        finally:
            rmtree(root)
        nth += 1
    assert nth > 6, nth  # the refill's writes and renames were all cut at
    assert seen.get("before") and seen.get("after"), seen


def _plan_view(app, new_crc, old_crc):
    crc = app.plan_crc()
    if crc == old_crc and app.sched.start_windows == []:
        return "before"
    if crc == new_crc and app.sched.start_windows and app.sched.in_start(0):
        return "after"
    return "mixed: crc %s, start windows %r" % (crc, app.sched.start_windows)


def test_power_cut_at_every_point_of_plan_set():
    """Finding 5: a cut inside plan.set stored the new plan with the old schedule state, so
    its start bolus was skipped, and the plan CRC then said nothing was left to send."""
    seen = {}
    nth = 1
    new_crc = old_crc = None
    while True:
        root = tmpdir()
        try:
            app, b = _running(root)
            old_crc = app.plan_crc()
            _arm(app, nth)
            try:
                res = app.call("plan.set", {"plan": P2}, "clinician", "pq-1", b.t_ms)
                new_crc = res["plan_crc"]
                break
            except _Cut:
                pass
            app2, b2 = _boot(root)
            if new_crc is None:
                new_crc = _crc_of(P2)
            view = _plan_view(app2, new_crc, old_crc)
            assert view in ("before", "after"), ("cut at op %d: %s" % (nth, view))
            seen[view] = seen.get(view, 0) + 1
            gen = getattr(app2, "gen", None)
            steps0 = app2.call("status", {}, "clinician", "s", 0)["delivered_steps"]
            res = app2.call("plan.set", {"plan": P2}, "clinician", "pq-1", 0)
            assert res["plan_crc"] == new_crc and res["plan"] == app2.plan
            assert _plan_view(app2, new_crc, old_crc) == "after", nth
            if view == "after":
                assert app2.gen == gen  # answered from the commit, not applied again
            # the start bolus is given: 50 µg at 2 mg/mL = 25 µL = 100 steps, then basal (a
            # cut inside a segment leaves the account prepaid by up to one segment, 40 steps)
            w = app2.sched.start_windows
            assert sum(r * (e - s) for s, e, r in w) // DAY == 25_000, w
            app2.step(0)  # the loop's iteration after a command
            run_until(app2, b2, 20 * 60_000)
            done = app2.call("status", {}, "clinician", "s", b2.t_ms)["delivered_steps"] - steps0
            assert done >= 100 - 40, (nth, done)
        finally:
            rmtree(root)
        nth += 1
    assert nth > 6, nth
    assert seen.get("before") and seen.get("after"), seen


def _crc_of(plan):
    from pumpcore import dose
    from pumpcore import plan as planmod

    return dose.crc(planmod.validate(plan, {"max_nl_day": 200 * 86_400 * 250,
                                            "reservoir_nl": 20_000_000}))


def test_a_retried_refill_after_a_reset_is_answered_not_applied():
    """A refill retried with the same id after a reset (the server's cache is gone) gets the
    committed answer: the reservoir is not filled again, the bridge not restarted."""
    root = tmpdir()
    try:
        app, b = _running(root)
        args = {"volume_nl": REFILL_NL, "conc_ng_ml": NEW_CONC}
        res = app.call("refill", args, "clinician", "rq-9", b.t_ms)
        run_until(app, b, b.t_ms + 2 * HOUR)
        app2, b2 = _boot(root)
        vol = app2.reservoir.volume_nl
        until = [list(x) for x in app2.sched.bridges]
        assert vol < REFILL_NL
        again = app2.call("refill", args, "clinician", "rq-9", 0)
        assert again == res
        assert app2.reservoir.volume_nl == vol and app2.sched.bridges == until
        # the same id with other arguments is another request, not a retry
        other = app2.call("refill", {"volume_nl": REFILL_NL}, "clinician", "rq-9", 0)
        assert other["bridge_nl"] == 0 and app2.reservoir.volume_nl == REFILL_NL
    finally:
        rmtree(root)


def _assert_memory_and_safe(app, b, what):
    assert app.therapy == "safe", what
    assert "MEMORY" in app.alarms.active(), what
    # never a plan without its schedule: a refill or a resume would fail on it
    assert (app.plan is None) == (app.sched is None), what
    st = app.call("status", {}, "clinician", "s", 0)
    assert st["therapy"] == "safe" and "MEMORY" in st["alarms"], what
    assert "EMPTY" not in st["alarms"], what
    run_until(app, b, DAY)
    assert b.pulses_at(DAY) == 0 and b.seg is None, what


def test_a_missing_record_is_corruption():
    """Finding 6: deleting `state` stopped therapy with no alarm, deleting `count` read the
    reservoir as 0 (EMPTY instead of MEMORY), deleting `calib` went back to the default step
    volume and kept running. Each missing record (or the head) is now MEMORY + safe state,
    and stays so across another reset."""
    import os

    for name in RECORDS:
        root = tmpdir()
        try:
            _running(root)
            os.remove(root + "/data/" + name)
            app, b = _boot(root)
            _assert_memory_and_safe(app, b, name)
            app, b = _boot(root)
            _assert_memory_and_safe(app, b, name + " (second reset)")
        finally:
            rmtree(root)


def test_a_record_of_another_generation_is_corruption():
    """A record left from an older set (a stale copy) does not pass for the current one."""
    from _util import read_bytes, write_bytes

    for name in ("plan", "state", "count", "calib"):
        root = tmpdir()
        try:
            app, b = _running(root)
            old = read_bytes(root + "/data/" + name)
            app.call("refill", {"volume_nl": REFILL_NL, "conc_ng_ml": NEW_CONC}, "clinician",
                     "x", b.t_ms)
            app.call("calib.set", {"step_pl": 251_000}, "clinician", "y", b.t_ms)
            write_bytes(root + "/data/" + name, old)
            app, b = _boot(root)
            _assert_memory_and_safe(app, b, name)
        finally:
            rmtree(root)


def test_a_blank_board_is_not_corruption():
    root = tmpdir()
    try:
        app, b = _boot(root)
        assert app.therapy == "stopped" and "MEMORY" not in app.alarms.active()
        assert app.plan is None and app.gen == 1
        app, b = _boot(root)  # its first set (state, count, calib) was committed
        assert app.therapy == "stopped" and "MEMORY" not in app.alarms.active()
        assert app.gen == 2
    finally:
        rmtree(root)


def test_a_cut_inside_the_first_commit_leaves_a_blank_board():
    for nth in range(1, 6):
        root = tmpdir()
        try:
            b = FakeBoard(root=root + "/")
            app = App(b, keys={})
            _arm(app, nth)
            try:
                app.call("calib.set", {"step_pl": 251_000}, "clinician", "c", 0)
            except _Cut:
                pass
            app, b = _boot(root)
            assert app.therapy == "stopped" and "MEMORY" not in app.alarms.active(), nth
            assert app.step_pl in (250_000, 251_000), nth
        finally:
            rmtree(root)


def test_a_refused_refill_changes_nothing():
    root = tmpdir()
    try:
        app, b = _running(root)
        gen = app.gen
        try:
            app.call("refill", {"volume_nl": 0}, "clinician", "z", b.t_ms)
            raise AssertionError("accepted")
        except proto.CommandError as e:
            assert e.code == proto.BAD_ARGS
        assert app.gen == gen and not app.last_req[0].startswith("z ")
    finally:
        rmtree(root)


def test_after_a_lost_head_the_calibration_is_set_before_a_plan_runs():
    """Finding 6, the calibration: with the head lost, the calibration record cannot be
    trusted; a new plan is refused until calib.set, so the pump never runs on the board's
    default step volume."""
    import os

    root = tmpdir()
    try:
        _running(root)
        os.remove(root + "/data/head")
        app, b = _boot(root)
        _assert_memory_and_safe(app, b, "head")
        try:
            app.call("plan.set", {"plan": P1}, "clinician", "p2", b.t_ms)
            raise AssertionError("a plan was accepted with no calibration record")
        except proto.CommandError as e:
            assert e.code == proto.SAFE_STATE and "calib" in e.message
        app.call("calib.set", {"step_pl": 251_000}, "clinician", "c2", b.t_ms)
        app.call("refill", {"volume_nl": FILL_NL}, "clinician", "f2", b.t_ms)
        app.call("plan.set", {"plan": P1}, "clinician", "p2", b.t_ms)
        assert app.therapy == "running"
        app, b = _boot(root)
        assert app.therapy == "running"
        assert not app.alarms.condition_active("MEMORY") and app.step_pl == 251_000
    finally:
        rmtree(root)
