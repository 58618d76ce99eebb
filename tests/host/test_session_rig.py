"""Issue 12 on the virtual rig: a role ends with its connection, requests after `auth` are
signed (a second program without the key gets nothing but `hello`), a wrong MAC on one
connection does not keep the clinician out on the next, and the event log shows logins and
clinician commands. Real firmware (.mpy as flashed), real pty, pyserial."""

import os
import sys
import time

import pytest

pytest.importorskip("serial")
import serial  # noqa: E402
from pumpcore import auth, proto  # noqa: E402
from pumprig import keys as keystore  # noqa: E402
from pumprig.client import Client  # noqa: E402
from pumprig.errors import AuthError, PumprigError  # noqa: E402
from pumprig.virtual.rig import open_rig  # noqa: E402

HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
TIMEOUT_S = 0.5


@pytest.fixture
def rig(home):
    r = open_rig(warp=True)
    try:
        yield r
    finally:
        r.stop()


def connect(rig, home, role="clinician", keys=None):
    last = None
    for _ in range(200):
        try:
            return Client(rig.link, role=role, home=home, keys=keys, timeout=TIMEOUT_S).open()
        except AuthError:
            raise
        except PumprigError as e:  # still booting
            last = e
            time.sleep(0.01)
    raise AssertionError("the firmware did not answer: %s" % last)


class Line:
    """Another program on the port: pyserial, no client logic."""

    def __init__(self, link):
        self.s = serial.Serial(link, baudrate=115200, timeout=0.02, exclusive=True)
        self.s.reset_input_buffer()
        self.rx = b""

    def ask(self, line, want_id, timeout_s=3.0):
        self.s.write(line)
        end = time.monotonic() + timeout_s
        poke = time.monotonic() + 0.2
        while True:
            while b"\n" in self.rx:
                one, self.rx = self.rx.split(b"\n", 1)
                f = proto.decode(one + b"\n")
                if f.error is None and f.kind == proto.RESPONSE and f.id == want_id:
                    return f
            now = time.monotonic()
            assert now < end, "no answer to %s" % want_id
            if now > poke:
                self.s.write(b"\n")  # an empty line wakes a rig that missed the bytes
                poke = now + 0.2
            self.rx += self.s.read(4096)

    def close(self):
        self.s.close()


def test_role_ends_when_the_port_closes(rig, home):
    """Finding 2: after a clinician's program exits, the next program on the port, with no
    hello and no auth, cannot stop therapy, set the clock or test the alarm, not even with
    frames signed with the old session's key (the session ended with the connection)."""
    c = connect(rig, home)
    assert c.clock_get()["set"] in (True, False)
    pad, seq = c._pad, c._seq  # what a program that copied the old session would hold
    c.close()
    line = Line(rig.link)
    try:
        for i, (cmd, args) in enumerate((("therapy.stop", {}),
                                         ("clock.set", {"epoch_s": 1_900_000_000, "offset_s": 0}),
                                         ("alarm.test", {}))):
            f = line.ask(proto.encode_request("x%d" % i, cmd, args), "x%d" % i)
            assert f.name == "err" and f.body["code"] == proto.AUTH_REQUIRED, (cmd, f.body)
            rid = "y%d" % i
            f = line.ask(auth.sign_request(pad, rid, cmd, args, seq + 1 + i), rid)
            assert f.name == "err" and f.body["code"] == proto.AUTH_REQUIRED, (cmd, f.body)
            assert "no session" in f.body["message"]
        assert line.ask(proto.encode_request("h1", "hello", {}), "h1").name == "ok"
    finally:
        line.close()
    with connect(rig, home) as c:
        st = c.status()
        assert st["therapy"] != "stopped" or st["plan_crc"] == "00000000"
        events = c.log_all()
    assert not [e for e in events if e["kind"] == "cmd" and e["data"]["cmd"] in
                ("therapy.stop", "clock.set", "alarm.test")]


def test_second_program_without_the_key_gets_only_hello(rig, home):
    """Finding 2: on the clinician's open line, unsigned frames, forged MACs and replayed
    signed frames run nothing."""
    c = connect(rig, home)
    try:
        t0 = c.clock_get()["epoch_s"]
        c._write(proto.encode_request("o1", "therapy.stop", {}))
        f = c._wait_response("o1", time.monotonic() + 3)
        assert f.body["code"] == proto.AUTH_REQUIRED
        c._write(proto.encode_request("o2", "status", {}))
        assert c._wait_response("o2", time.monotonic() + 3).body["code"] == proto.AUTH_REQUIRED
        forged = auth.sign_request(auth.pads(b"\x01" * 32), "o3", "clock.set",
                                   {"epoch_s": 1_900_000_000, "offset_s": 0}, 10_000)
        c._write(forged)
        assert c._wait_response("o3", time.monotonic() + 3).body["code"] == proto.BAD_MAC
        # a signed frame replayed after the record of ids forgot it: refused, not run again
        rid, alarm = c.frame("alarm.test")
        c._write(alarm)
        assert c._wait_response(rid, time.monotonic() + 3).name == "ok"
        for _ in range(4):
            c.clock_get()
        c._write(alarm)
        assert c._wait_response(rid, time.monotonic() + 3).body["code"] == proto.REPLAY
        assert abs(c.clock_get()["epoch_s"] - t0) < 10  # the forged clock.set did not run
        tests = [e for e in c.log_all() if e["kind"] == "cmd" and e["data"]["cmd"] == "alarm.test"]
        assert len(tests) == 1
    finally:
        c.close()


def test_wrong_macs_do_not_lock_the_clinician_out_and_are_audited(rig, home):
    """Findings 4 and 7: an attacker's wrong MACs on its connection do not stop the clinician
    logging in on the next one; failed and good logins and each clinician command are in
    the log, by role, without secrets."""
    uid = connect(rig, home, role="none").info["uid"]
    bad = {uid: {"clinician": "ee" * 32, "patient": "ee" * 32}}
    for _ in range(3):
        with pytest.raises(AuthError) as e:
            connect(rig, home, keys=bad)
        assert e.value.code in (proto.AUTH_FAILED, proto.THROTTLED)
    with connect(rig, home) as c:  # a new connection, right away: no back-off inherited
        c.alarm_test()
        c.ack()
        events = c.log_all()
    kinds = [(e["kind"], e["data"]) for e in events if e["kind"] in ("auth.ok", "auth.fail", "cmd")]
    fails = [d for k, d in kinds if k == "auth.fail"]
    assert fails and fails[0]["role"] == "clinician" and fails[0]["reason"] == "wrong key"
    oks = [d for k, d in kinds if k == "auth.ok"]
    assert oks[-1]["role"] == "clinician"
    cmds = [d for k, d in kinds if k == "cmd"]
    assert {"cmd": "alarm.test", "role": "clinician", "code": None} in cmds
    assert {"cmd": "ack", "role": "clinician", "code": None} in cmds
    secrets = [v for v in keystore.KeyStore(home).load().get(uid, {}).values()] + ["ee" * 32]
    for e in events:
        for s in secrets:
            assert s not in repr(e)
