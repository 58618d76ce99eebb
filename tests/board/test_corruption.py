"""A damaged record is caught by its CRC: MEMORY alarm, safe state, no pulse on garbage.

Runs under CPython and MicroPython. Each record of the therapy (`plan`, `state`, `count`) and
the calibration (`calib`) is damaged in several ways (a flipped bit at the start, middle and end
of the line, in the CRC itself, a truncation, an empty file); the pump then boots on the damaged
files. It must raise the critical MEMORY alarm, report therapy "safe", refuse to resume, and make
no pulse in a day; and a clinician's fix (a plan, or a calibration) brings it back.
"""

from _util import raises, read_bytes, rmtree, tmpdir, write_bytes
from fakeboard import FakeBoard, run_until
from pumpcore import proto
from pumpcore.app import App

DAY = 86_400_000
P1 = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
      "basal": {"kind": "continuous", "ng_day": 400_000}}
RECORDS = ("plan", "state", "count", "calib")


def _running_pump(root):
    b = FakeBoard(root=root + "/")
    app = App(b, keys={})
    app.call("calib.set", {"step_pl": 250_000}, "clinician", "c", 0)
    app.call("refill", {"volume_nl": 20_000_000}, "clinician", "f", 0)
    app.call("plan.set", {"plan": P1}, "clinician", "p", 0)
    run_until(app, b, DAY // 2)
    assert b.pulses_at(b.t_ms) > 0 and app.therapy == "running"
    return app


def _damages(data):
    """(label, damaged bytes) for one record line."""
    n = len(data)
    out = []
    for label, i, bit in (("first byte", 0, 0x01), ("middle", n // 2, 0x10),
                          ("last json byte", n - 11, 0x02), ("in the crc", n - 4, 0x01),
                          ("newline", n - 1, 0x20)):
        d = bytearray(data)
        d[i] ^= bit
        out.append((label, bytes(d)))
    out.append(("truncated", data[: n // 2]))
    out.append(("crc cut off", data[: n - 5]))
    out.append(("empty", b""))
    return out


def _boot_damaged(root, name, damaged):
    write_bytes(root + "/data/" + name, damaged)
    b = FakeBoard(root=root + "/")
    app = App(b, keys={})
    return app, b


def test_each_damaged_record_goes_to_the_safe_state():
    checked = 0
    for name in RECORDS:
        root = tmpdir()
        try:
            _running_pump(root)
            good = read_bytes(root + "/data/" + name)
            for label, damaged in _damages(good):
                app, b = _boot_damaged(root, name, damaged)
                what = "%s/%s" % (name, label)
                assert app.therapy == "safe", what
                assert "MEMORY" in app.alarms.active(), what
                st = app.call("status", {}, "clinician", "s", 0)
                assert st["therapy"] == "safe" and "MEMORY" in st["alarms"], what
                e = raises(proto.CommandError, app.call, "therapy.resume", {}, "clinician",
                           "r", 0)
                assert e.code == proto.SAFE_STATE, what
                e = raises(proto.CommandError, app.call, "bolus", {}, "patient", "b", 0)
                assert e.code in (proto.BOLUS_NOT_ALLOWED, proto.THERAPY_STOPPED), what
                run_until(app, b, DAY)
                assert b.pulses_at(DAY) == 0 and b.seg is None, what
                assert app.therapy == "safe", what
                checked += 1
                write_bytes(root + "/data/" + name, good)  # next damage on the good record
        finally:
            rmtree(root)
    assert checked == len(RECORDS) * 8


def test_the_alarm_survives_another_reset():
    root = tmpdir()
    try:
        _running_pump(root)
        d = bytearray(read_bytes(root + "/data/count"))
        d[3] ^= 0x08
        app, b = _boot_damaged(root, "count", bytes(d))
        assert app.therapy == "safe"
        # power cycle again: still safe (the state now says so), still no pulses
        b2 = FakeBoard(root=root + "/")
        app2 = App(b2, keys={})
        assert app2.therapy == "safe" and "MEMORY" in app2.alarms.active()
        run_until(app2, b2, DAY)
        assert b2.pulses_at(DAY) == 0
    finally:
        rmtree(root)


def test_a_clinician_plan_or_calibration_clears_it():
    root = tmpdir()
    try:
        _running_pump(root)
        d = bytearray(read_bytes(root + "/data/plan"))
        d[len(d) // 2] ^= 0x04
        app, b = _boot_damaged(root, "plan", bytes(d))
        assert app.therapy == "safe"
        # the therapy record held the reservoir too: the pump no longer trusts any volume
        assert app.call("status", {}, "clinician", "s", 0)["reservoir_nl"] == 0
        app.call("refill", {"volume_nl": 20_000_000}, "clinician", "f2", 0)
        app.call("plan.set", {"plan": P1}, "clinician", "p2", 0)
        assert app.therapy == "running" and not app.alarms.condition_active("MEMORY")
        app.call("ack", {}, "clinician", "a", 0)  # latched until acknowledged
        assert "MEMORY" not in app.alarms.active()
        run_until(app, b, DAY)
        assert b.pulses_at(DAY) > 0
    finally:
        rmtree(root)
    root = tmpdir()
    try:
        _running_pump(root)
        d = read_bytes(root + "/data/calib")
        app, b = _boot_damaged(root, "calib", d[:-3])
        assert app.therapy == "safe" and "MEMORY" in app.alarms.active()
        app.call("calib.set", {"step_pl": 250_000}, "clinician", "c2", 0)
        assert not app.alarms.condition_active("MEMORY") and app.therapy != "safe"
    finally:
        rmtree(root)
