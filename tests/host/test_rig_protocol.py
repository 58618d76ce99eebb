"""The wire protocol against the real firmware on a virtual rig (warp mode, real pty, pyserial).

What the rig does is checked against the world (pulses it counted), never only against what
the firmware says about itself: a retried bolus doses once, a refused plan leaves the old rate
running, malformed lines change nothing.
"""

import os
import sys
import time
import zlib

import pytest

pytest.importorskip("serial")
import serial  # noqa: E402
from pumpcore import auth, proto  # noqa: E402
from pumpcore import plan as core  # noqa: E402
from pumprig import keys as keystore  # noqa: E402
from pumprig.client import Client  # noqa: E402
from pumprig.errors import AuthError, DeviceError, PumprigError  # noqa: E402
from pumprig.plans import load_plan  # noqa: E402
from pumprig.virtual.rig import open_rig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")

P1 = os.path.join(ROOT, "examples", "p1-baclofen-continuous.toml")
P5 = os.path.join(ROOT, "examples", "p5-morphine-patient.toml")
DAY_MS = 86_400_000
STEP_PL = 250_000  # boards/sim.json
FILL_NL = 20_000_000
# The firmware answers in about a millisecond; a short timeout bounds what a lost wake-up of
# the warp-mode rig costs (the client then resends the same frame, which wakes it).
TIMEOUT_S = 0.5


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def rig(home):
    """A virtual rig in warp mode running the repository's firmware (time stands still until
    world.advance)."""
    r = open_rig(warp=True)
    try:
        yield r
    finally:
        r.stop()


def connect(rig, home, role="clinician", tries=200, cls=Client):
    last = None
    for _ in range(tries):
        try:
            return cls(rig.link, role=role, home=home, timeout=TIMEOUT_S).open()
        except PumprigError as e:  # the firmware is still booting
            last = e
            time.sleep(0.01)
    raise AssertionError("the firmware did not answer: %s" % last)


def steps_for(nl):
    return nl * 1000 / STEP_PL


class Raw:
    """Bytes on the rig's pty through pyserial, no client logic: what a hand-written client or
    a noisy line sends. Given a logged-in Client, it writes on that client's port and signs
    the lines it builds (frame) with the client's session: a role lasts only as long as the
    connection, and only for signed requests (issue 12)."""

    def __init__(self, link=None, client=None):
        self.c = client
        if client is not None:
            self.s = client.ser
        else:
            self.s = serial.Serial(link, baudrate=115200, timeout=0.02, exclusive=True)
            self.s.reset_input_buffer()
        self.rx = b""

    def frame(self, rid, cmd, args=None):
        """A request line: signed with the client's session, plain without a client."""
        if self.c is None:
            return proto.encode_request(rid, cmd, args)
        return self.c.frame(cmd, args, req_id=rid)[1]

    def close(self):
        if self.c is not None:
            self.c.close()
        else:
            self.s.close()

    def write(self, data):
        self.s.write(data)

    def line_for(self, want_id, timeout_s=3.0):
        """The next response frame (decoded) with id want_id; events and others skipped."""
        end = time.monotonic() + timeout_s
        poke = time.monotonic() + 0.2
        while True:
            while b"\n" in self.rx:
                line, self.rx = self.rx.split(b"\n", 1)
                f = proto.decode(line + b"\n")
                if f.error is None and f.kind == proto.RESPONSE and f.id == want_id:
                    return f, line + b"\n"
            now = time.monotonic()
            if now > end:
                raise AssertionError("no response %s; got %r" % (want_id, self.rx[-300:]))
            if now > poke:
                # The virtual rig can miss the wake-up for bytes that arrive while the firmware
                # is between two waits (see the report); an empty line is ignored by the
                # protocol and wakes it again.
                self.s.write(b"\n")
                poke = now + 0.2
            self.rx += self.s.read(4096)

    def ask(self, line, want_id):
        self.write(line)
        return self.line_for(want_id)

    def quiet(self, s=0.1):
        """Whatever arrives within s (to show that nothing does)."""
        end = time.monotonic() + s
        while time.monotonic() < end:
            self.rx += self.s.read(4096)
        out, self.rx = self.rx, b""
        return out


def snapshot(c, world):
    st = c.status()
    m = world.measure()
    return {"plan_crc": st["plan_crc"], "alarms": c.alarms(), "active": st["alarms"],
            "delivered_steps": st["delivered_steps"], "therapy": st["therapy"],
            "reservoir_nl": st["reservoir_nl"], "pulses": m["pulses_fwd"],
            "resets": m["resets"], "boots": m["boots"]}


def program(rig, home, path):
    """Clinician session: fill, program `path`; returns (client, plan, world ms programmed)."""
    c = connect(rig, home)
    c.refill(FILL_NL)
    plan = load_plan(path)
    t_ms = rig.world.measure()["time_ms"]
    res = c.plan_set(plan)
    assert res["plan_crc"] == core.crc(plan)
    assert rig.world.measure()["time_ms"] == t_ms  # warp: time stood still meanwhile
    return c, plan, t_ms


# --------------------------------------------------------------------------- 1: CRC, lockout


def test_status_shows_the_programmed_plan_and_lockout_refuses_a_bolus(rig, home):
    c, plan, _ = program(rig, home, P1)
    st = c.status()
    assert st["plan_crc"] == core.crc(plan) != "00000000"
    assert st["mode"] == "continuous" and st["therapy"] == "running"
    assert st["rate_nl_day"] == 200_000
    c.close()
    # a fresh session sees the same plan in hello and plan.get
    with connect(rig, home, role="patient") as p:
        assert p.info["plan_crc"] == core.crc(plan)
        assert p.plan_get()["plan"] == plan
        with pytest.raises(DeviceError) as e:
            p.bolus()  # P1 has no patient bolus
        assert e.value.code == proto.BOLUS_NOT_ALLOWED

    c, plan5, _ = program(rig, home, P5)
    c.close()
    with connect(rig, home, role="patient") as p:
        with pytest.raises(DeviceError) as e:
            p.bolus()  # the lockout runs from programming
        assert e.value.code == proto.LOCKOUT and "lockout" in str(e.value)
        st = p.status()
        assert st["boluses_24h"] == 0 and st["plan_crc"] == core.crc(plan5)
    assert rig.world.measure()["pulses_fwd"] == 0


# --------------------------------------------------------------------------- 2: bolus once


class LossyClient(Client):
    """Loses the first response to each listed command (the line dropped it): the client then
    resends the same frame, as it does after a timeout, without waiting for the timeout.
    `on_lost()` runs in between (e.g. to let the world's time pass)."""

    lose = ("bolus",)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent = []
        self.lost = []
        self.on_lost = lambda: None

    def _write(self, data):
        self.sent.append(bytes(data))
        super()._write(data)

    def _wait_response(self, req_id, deadline):
        f = super()._wait_response(req_id, deadline)
        cmd = self.sent[-1].split(b" ", 2)[1].decode()
        if f is not None and cmd in self.lose and req_id not in self.lost:
            self.lost.append(req_id)
            self.on_lost()
            return None
        return f


def _ideal_steps(t0_ms, t1_ms, nl_day, bolus_nl):
    return steps_for(nl_day * (t1_ms - t0_ms) // DAY_MS + bolus_nl)


@pytest.fixture
def p5_short(tmp_path):
    """P5 with a 10 min lockout (the shortest a 10 min bolus allows): a retry that comes after
    the lockout would be dosed again if the rig executed it again."""
    text = open(P5).read()
    text = text.replace('lockout = "2 h"', 'lockout = "10 min"')
    text = text.replace('per_day = "3 mg"', 'per_day = "3 mg"\nper_hour = "1 mg"')
    path = tmp_path / "p5-short.toml"
    path.write_text(text)
    assert load_plan(str(path))["patient"]["lockout_s"] == 600
    return str(path)


BOLUS_NL = 10_000  # P5: 0.1 mg at 10 mg/mL
BASAL_NL_DAY = 200_000  # P5: 2 mg/day at 10 mg/mL


def test_retried_bolus_is_delivered_once(rig, home, p5_short):
    c, plan, t_prog = program(rig, home, p5_short)
    c.close()
    p = plan["patient"]
    assert p["ng"] * 1_000_000 // plan["conc_ng_ml"] == BOLUS_NL
    rig.world.advance(to_ms=t_prog + p["lockout_s"] * 1000 + 1000)
    lc = connect(rig, home, role="patient", cls=LossyClient)
    # the response is lost and the client's retry arrives after the lockout has run out
    lc.on_lost = lambda: rig.world.advance(by_ms=p["lockout_s"] * 1000 + 1000)
    try:
        res = lc.bolus()
        assert res["volume_nl"] == BOLUS_NL and res["dur_s"] == p["dur_s"]
        bolus_frames = [s for s in lc.sent if b" bolus " in s]
        assert len(bolus_frames) == 2 and bolus_frames[0] == bolus_frames[1]  # same id, resent
        assert lc.lost and lc.status()["boluses_24h"] == 1
    finally:
        lc.close()
    t_end = rig.world.measure()["time_ms"] + p["dur_s"] * 1000 + 5 * 60_000
    m = rig.world.advance(to_ms=t_end)
    ideal = _ideal_steps(t_prog, t_end, BASAL_NL_DAY, BOLUS_NL)
    assert abs(m["pulses_fwd"] - ideal) <= 1, (m["pulses_fwd"], ideal)
    assert m["pulses_rev"] == 0
    with connect(rig, home, role="patient") as pc:
        st = pc.status()
        assert st["boluses_24h"] == 1
        assert st["delivered_steps"] == m["pulses_fwd"]  # the firmware's count is the world's


def test_same_raw_bolus_frame_twice_delivers_once(rig, home, p5_short):
    c, plan, t_prog = program(rig, home, p5_short)
    c.close()
    lockout_ms = plan["patient"]["lockout_s"] * 1000
    rig.world.advance(to_ms=t_prog + lockout_ms + 1000)
    raw = Raw(client=connect(rig, home, role="patient"))
    try:
        frame = raw.frame("retry-7", "bolus")
        f1, line1 = raw.ask(frame, "retry-7")  # the response "was lost": ask again, later
        assert f1.name == "ok" and f1.body["volume_nl"] == BOLUS_NL
        rig.world.advance(by_ms=lockout_ms + 1000)
        f2, line2 = raw.ask(frame, "retry-7")
        assert line2 == line1  # replayed from the record of ids, not executed again
        # the same id on a different request is refused, and does not dose either
        f3, _ = raw.ask(raw.frame("retry-7", "bolus", {"x": 1}), "retry-7")
        assert f3.name == "err" and f3.body["code"] == proto.BAD_FRAME
        assert "reused" in f3.body["message"]
        f4, _ = raw.ask(raw.frame("s1", "status"), "s1")
        assert f4.body["boluses_24h"] == 1
        # control: a new request (new id) at the same moment is a second bolus, and the world
        # sees it, so a re-executed retry could not have gone unnoticed
        f5, _ = raw.ask(raw.frame("retry-8", "bolus"), "retry-8")
        assert f5.name == "ok", f5.body
    finally:
        raw.close()
    t_end = rig.world.measure()["time_ms"] + 20 * 60_000
    m = rig.world.advance(to_ms=t_end)
    ideal = _ideal_steps(t_prog, t_end, BASAL_NL_DAY, 2 * BOLUS_NL)
    assert abs(m["pulses_fwd"] - ideal) <= 1, (m["pulses_fwd"], ideal)


def test_bolus_retry_after_a_reset_is_answered_not_dosed(rig, home, p5_short):
    c, plan, t_prog = program(rig, home, p5_short)
    c.close()
    rig.world.advance(to_ms=t_prog + plan["patient"]["lockout_s"] * 1000 + 1000)
    raw = Raw(client=connect(rig, home, role="patient"))
    try:
        f1, _ = raw.ask(raw.frame("across-1", "bolus"), "across-1")
    finally:
        raw.close()
    assert f1.name == "ok"
    boots = rig.world.measure()["boots"]
    rig.world.reset()  # the response "was lost" in a reset; the host retries in a new session
    # a new session after the reset: the same request id, signed in it (the old session's
    # signature means nothing now); hello emptied the record of ids
    raw = Raw(client=connect(rig, home, role="patient"))
    assert rig.world.measure()["boots"] == boots + 1
    rig.world.advance(by_ms=plan["patient"]["lockout_s"] * 1000 + 1000)  # retried much later
    try:
        f2, _ = raw.ask(raw.frame("across-1", "bolus"), "across-1")
        assert f2.name == "ok" and f2.body == f1.body  # answered from the persisted bolus
        f3, _ = raw.ask(raw.frame("s2", "status"), "s2")
        assert f3.body["boluses_24h"] == 1
    finally:
        raw.close()
    t_end = rig.world.measure()["time_ms"] + 20 * 60_000
    m = rig.world.advance(to_ms=t_end)
    one = _ideal_steps(t_prog, t_end, BASAL_NL_DAY, BOLUS_NL)
    # a reset may cost up to one segment (the firmware never over-delivers); a second bolus
    # would add 40 steps
    assert one - 41 <= m["pulses_fwd"] <= one + 1, (m["pulses_fwd"], one)


# --------------------------------------------------------------------------- 3: roles


def _half_dose(plan):
    new = dict(plan)
    new["basal"] = dict(plan["basal"], ng_day=plan["basal"]["ng_day"] // 2)
    return core.validate(new, {"max_nl_day": 10**9, "reservoir_nl": FILL_NL})


def test_programming_with_the_patient_key_or_a_wrong_key_is_refused(rig, home):
    c, plan, t_prog = program(rig, home, P1)
    c.close()
    other = _half_dose(plan)
    assert core.crc(other) != core.crc(plan)

    with connect(rig, home, role="patient") as p:
        with pytest.raises(AuthError) as e:
            p.plan_set(other)
        assert e.value.code == proto.FORBIDDEN
        with pytest.raises(AuthError):
            p.calib_set(100_000)

    # a wrong clinician key: the login fails, so nothing after it can run
    ks = keystore.KeyStore(home)
    uid = next(iter(ks.load()))
    good = ks.load()[uid]
    ks.save(uid, {"patient": good["patient"], "clinician": "ab" * 32})
    with pytest.raises(AuthError) as e:
        Client(rig.link, role="clinician", home=home, timeout=TIMEOUT_S).open()
    assert e.value.code == proto.AUTH_FAILED
    assert "ab" * 32 not in str(e.value)  # keys are never echoed
    # the raw way: a session without a role cannot program either
    with Client(rig.link, role=None, home=home, timeout=TIMEOUT_S) as n:
        with pytest.raises(AuthError) as e:
            n.plan_set(other)
        assert e.value.code == proto.AUTH_REQUIRED
        assert n.info["plan_crc"] == core.crc(plan)  # hello needs no role

    # the world still runs the old plan: 0.2 mL/day = 800 steps/day, not 400
    t_end = t_prog + DAY_MS // 4
    m = rig.world.advance(to_ms=t_end)
    assert abs(m["pulses_fwd"] - _ideal_steps(t_prog, t_end, 200_000, 0)) <= 1
    ks.save(uid, good)
    with connect(rig, home) as c:
        st = c.status()
        assert st["plan_crc"] == core.crc(plan) and st["rate_nl_day"] == 200_000
        assert c.plan_get()["plan"] == plan


def test_wrong_key_throttles_the_next_login_in_board_time(rig, home):
    """A wrong MAC delays the next attempt on the same connection (board time); a new
    connection starts without that delay (issue 12, finding 4), under the rig-wide ceiling."""
    c, plan, _ = program(rig, home, P1)
    c.close()
    ks = keystore.KeyStore(home)
    uid = next(iter(ks.load()))
    key = ks.load()[uid]["clinician"]
    line = connect(rig, home, role="none")  # one connection for all the attempts below

    def attempt(k):
        nonce = line.request("hello")["nonce"]
        cn = os.urandom(16).hex()
        try:
            line.request("auth", {"role": "clinician", "cnonce": cn,
                                  "mac": auth.mac_hex(k, nonce, "clinician", uid, cn)})
            return "ok"
        except AuthError as e:
            return e.code

    try:
        assert attempt("cd" * 32) == proto.AUTH_FAILED
        assert attempt(key) == proto.THROTTLED  # the right key, too soon, same connection
        rig.world.advance(by_ms=1100)  # the delay runs on board time (frozen in warp)
        assert attempt(key) == "ok"
        assert attempt("cd" * 32) == proto.AUTH_FAILED
    finally:
        line.close()
    with connect(rig, home, tries=1) as c:  # a new connection: right away
        assert c.status()["plan_crc"] == core.crc(plan)


# --------------------------------------------------------------------------- 4: bad lines


def _err(f):
    assert f.name == "err", f.body
    return f.body["code"]


def test_malformed_lines_get_an_error_and_change_nothing(rig, home):
    c, plan, t_prog = program(rig, home, P1)
    rig.world.advance(to_ms=t_prog + DAY_MS // 8)  # some delivery to keep an eye on
    before = snapshot(c, rig.world)
    assert before["pulses"] > 0 and before["delivered_steps"] == before["pulses"]
    other = _half_dose(load_plan(P1))
    raw = Raw(client=c)  # the clinician's connection
    try:
        # a bad checksum on a request that would change the plan
        good = raw.frame("bc1", "plan.set", {"plan": other})
        bad = good[:-9] + (b"0" * 8 if good[-9:-1] != b"0" * 8 else b"1" * 8) + b"\n"
        assert _err(raw.ask(bad, "bc1")[0]) == proto.BAD_CRC
        # a bit flipped inside the JSON, CRC left as it was
        flipped = good.replace(b'"ng_day":200000', b'"ng_day":200001')
        assert flipped != good
        assert _err(raw.ask(flipped, "bc1")[0]) == proto.BAD_CRC
        # an over-long line with a readable id: TOO_LONG once its newline arrives
        long_line = _crc_line(b'@long1 plan.set {"pad":"' + b"x" * 1500 + b'"}')
        assert len(long_line) > proto.MAX_LINE
        assert _err(raw.ask(long_line, "long1")[0]) == proto.TOO_LONG
        # the same, written in pieces
        raw.write(long_line[:700])
        raw.write(long_line[700:1400])
        raw.write(long_line[1400:])
        assert _err(raw.line_for("long1")[0]) == proto.TOO_LONG
        # an over-long line without an id: dropped (no id to answer); the next frame is fine
        raw.write(b"z" * 3000 + b"\n")
        f, _ = raw.ask(raw.frame("after-long", "calib.get"), "after-long")
        assert f.name == "ok" and f.body == {"step_pl": STEP_PL}
        # junk and REPL-looking lines: an error for id 0 (or the id, when one can be read)
        for junk, fid in ((b"\x00\xff\xfe garbage\n", "0"), (b"hello\n", "0"),
                          (b"import os; os.remove('data/plan')\r\n", "0"),
                          (b">>> import machine; machine.reset()\n", "0"), (b"@\n", "0"),
                          (b"*00000000\n", "0"), (b"@x status {}\n", "x"),
                          (b'@ok1 status {"a":1.5}*00000000\n', "ok1")):
            f, _ = raw.ask(junk, fid)
            assert _err(f) in (proto.BAD_FRAME, proto.BAD_CRC), junk
        # valid CRC, invalid content: a float, a response sent to the rig, an unknown command
        for line, want in (
            (_crc_line(b'@fl1 plan.set {"plan":{"v":1.5}}'), proto.BAD_FRAME),
            (_crc_line(b"=resp1 ok {}"), proto.BAD_FRAME),
            (_crc_line(b"@uk1 motor.spin {}"), proto.UNKNOWN_CMD),
            (raw.frame("ba1", "refill", {"volume_nl": -5}), proto.BAD_ARGS),
            (raw.frame("ba2", "calib.set", {"step_pl": 1, "extra": 2}), proto.BAD_ARGS),
            (_crc_line(b'@ba3 refill {"volume_nl":-5}'), proto.AUTH_REQUIRED),  # not signed
        ):
            fid = line[1:].split(b" ", 1)[0].decode()
            if line[:1] == b"=":
                fid = proto.NO_ID  # a response line is answered with id 0 (issue 13)
            assert _err(raw.ask(line, fid)[0]) == want, line
        # a valid request right after all that still works, in the same session
        f, _ = raw.ask(raw.frame("ok2", "plan.get"), "ok2")
        assert f.name == "ok" and f.body["plan_crc"] == before["plan_crc"]
    finally:
        raw.close()
    with connect(rig, home) as c:
        after = snapshot(c, rig.world)
    assert after == before


def _crc_line(body):
    return body + b"*%08x\n" % (zlib.crc32(body) & 0xFFFFFFFF)


def test_ctrl_bytes_and_crlf(rig, home):
    """A \\r before the newline is tolerated; a byte outside printable ASCII is refused."""
    raw = Raw(client=connect(rig, home, role="patient"))
    try:
        f, _ = raw.ask(raw.frame("cr1", "clock.get")[:-1] + b"\r\n", "cr1")
        assert f.name == "ok" and f.body["set"] is True  # CRLF accepted: answered
        tab = _crc_line(b'@tab1 status {\t}')
        assert _err(raw.ask(tab, "tab1")[0]) == proto.BAD_FRAME
        assert raw.quiet(0.05).strip() == b""  # one answer per line, nothing more
    finally:
        raw.close()
