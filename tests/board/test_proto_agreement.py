"""Issue 13: the firmware does what docs/protocol.md says on the points where they disagreed.

Runs under CPython and MicroPython.
"""

from _util import ClientSession, raises, rmtree, tmpdir
from fakeboard import FakeBoard, run_until
from pumpcore import evlog, proto
from pumpcore.app import App

P5 = {"drug": "morphine", "conc_ng_ml": 10_000_000,
      "basal": {"kind": "continuous", "ng_day": 2_000_000},
      "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 7200, "max_24h": 6},
      "caps": {"ng_24h": 3_000_000}}
KEYS = {"clinician": "11" * 32, "patient": "22" * 32}


class _Rig:
    """A FakeBoard in a new folder with the app booted (removed on exit); with `running`, the
    reservoir filled and P5 programmed at t=0."""

    def __init__(self, keys=None, running=False):
        self.keys = keys or {}
        self.running = running

    def __enter__(self):
        self.root = tmpdir()
        self.b = FakeBoard(root=self.root + "/")
        self.app = App(self.b, keys=self.keys)
        if self.running:
            self.app.call("refill", {"volume_nl": 20_000_000}, "clinician", "r1", 0)
            self.app.call("plan.set", {"plan": P5}, "clinician", "p1", 0)
        return self.app, self.b

    def __exit__(self, *exc):
        rmtree(self.root)


def _frames(app, line, now):
    app.board.rx = line
    app.board.t_ms = now
    app.step(now)
    out, app.board.tx = app.board.tx, b""
    return [proto.decode(x + b"\n") for x in out.split(b"\n") if x.startswith(b"=")]


def test_bolus_done_is_pushed_and_logged_with_the_volume_given():
    """Finding (issue 13): bolus.done was listed but never sent nor logged."""
    with _Rig(running=True) as (app, b):
        run_until(app, b, 2 * 3_600_000)
        res = app.call("bolus", {}, "patient", "b1", b.t_ms)
        assert not [e for e in evlog.events(app.events) if e["kind"] == "bolus.done"]
        run_until(app, b, b.t_ms + 600_000 + 5_000)  # the bolus's 10 min, and a little more
        done = [e for e in evlog.events(app.events) if e["kind"] == "bolus.done"]
        assert len(done) == 1, done
        assert done[0]["data"] == {"dose_ng": 100_000, "volume_nl": res["volume_nl"],
                                   "halted": False}
        assert res["volume_nl"] == 10_000
        pushed = [x for x in b.tx.split(b"\n") if b" bolus.done " in x]
        assert len(pushed) == 1 and b'"volume_nl":10000' in pushed[0], pushed
        # a later loop step does not send it again
        run_until(app, b, b.t_ms + 3_600_000)
        assert len([e for e in evlog.events(app.events) if e["kind"] == "bolus.done"]) == 1


def test_bolus_done_says_halted_when_therapy_stopped_during_the_bolus():
    """Issue 13: bolus.done never claims a whole bolus that was not given whole."""
    with _Rig(running=True) as (app, b):
        run_until(app, b, 2 * 3_600_000)
        app.call("bolus", {}, "patient", "b1", b.t_ms)
        run_until(app, b, b.t_ms + 120_000)
        app.call("therapy.stop", {}, "clinician", "s1", b.t_ms)
        run_until(app, b, b.t_ms + 60_000)
        app.call("therapy.resume", {}, "clinician", "s2", b.t_ms)
        run_until(app, b, b.t_ms + 600_000)
        done = [e for e in evlog.events(app.events) if e["kind"] == "bolus.done"]
        assert len(done) == 1 and done[0]["data"]["halted"] is True, done


def test_motor_run_while_therapy_runs_is_therapy_running_not_busy():
    """Finding (issue 13): motor.run during therapy answered BUSY ("try again later"), which
    can never succeed; now THERAPY_RUNNING says what has to change."""
    with _Rig(running=True) as (app, b):
        e = raises(proto.CommandError, app.call, "motor.run", {"steps": 3}, "clinician", "m1", 0)
        assert e.code == proto.THERAPY_RUNNING
        assert app.call("therapy.stop", {}, "clinician", "s1", 0) == {"therapy": "stopped"}
        assert app.call("motor.run", {"steps": 3}, "clinician", "m2", 0)["steps"] == 3


def test_a_response_line_is_answered_with_id_0():
    """Finding (issue 13): a `=` line sent to the rig was answered with its own id; the doc
    says (and now the firmware does) id 0, the id of answers to no request."""
    with _Rig(KEYS) as (app, _):
        line = proto.encode_ok("abc", {})
        fs = _frames(app, line, 0)
        assert len(fs) == 1 and fs[0].id == proto.NO_ID
        assert fs[0].body["code"] == proto.BAD_FRAME


def test_a_malformed_mac_is_bad_args_and_starts_no_throttle():
    """Finding (issue 13): a malformed `mac` was AUTH_FAILED and started the login throttle;
    it is BAD_ARGS now, the nonce still good, and a wrong MAC still counts."""
    with _Rig(KEYS) as (app, _):
        srv = app.server
        hello = _frames(app, proto.encode_request("h1", "hello", {}), 0)[0].body
        args = ClientSession().auth_args(KEYS["clinician"], hello, "clinician")
        for n, bad in enumerate(("zz" * 32, "11" * 31, "11" * 33, args["mac"].upper(), 5)):
            r = _frames(app, proto.encode_request("x%d" % n, "auth", dict(args, mac=bad)), 0)[0]
            assert r.body["code"] == proto.BAD_ARGS, (bad, r)
        assert srv.auth_failures == 0 and srv.auth_until_ms == 0 and srv.guard[0] == 0
        r = _frames(app, proto.encode_request("a1", "auth", args), 0)[0]  # same nonce: ok
        assert r.name == "ok" and r.body == {"role": "clinician"}
        hello = _frames(app, proto.encode_request("h2", "hello", {}), 0)[0].body
        args = ClientSession().auth_args("33" * 32, hello, "clinician")  # wrong key
        r = _frames(app, proto.encode_request("a2", "auth", args), 0)[0]
        assert r.body["code"] == proto.AUTH_FAILED and srv.auth_failures == 1
