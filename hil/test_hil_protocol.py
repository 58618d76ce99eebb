"""The protocol on the real link (marker `protocol`: `pytest hil --rig /dev/ttyACM0 -m protocol`).

Robustness: damaged, junk, over-long and unauthorised requests get error frames and change
nothing. Conformance (issue 13): every command's answer and every event validated against the
protocol schema (host/pumprig/protocol.schema.json), the error codes of bad frames, retries,
the login throttle, the documented example frames and schema examples on the rig, and the plan
CRC from the documented rule (pumprig_hil/plan_crc.py, standard library only) against the rig's.
Besides, every answer and event of every HIL test is validated (pumprig_hil.rig._CheckedClient).
"""

import re
from pathlib import Path

import pytest
from pumpcore import proto
from pumprig import protocol
from pumprig.errors import AuthError, DeviceError
from pumprig_hil import plan_crc
from pumprig_hil.plans import dye_plan, start
from pumprig_hil.plugin import require

pytestmark = pytest.mark.protocol
DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"

WATCH = ("therapy", "plan_crc", "reservoir_nl", "delivered_steps", "rate_nl_day", "alarms")


def _state(rig):
    st = rig.client.status()
    return {k: st[k] for k in WATCH}, rig.steps() if rig.inst.has("steps") else None


@pytest.fixture
def running(rig):
    # start() records the step counter's reading: a bench without one skips, saying why
    require(rig, "steps", "starting a plan for the protocol checks (start() samples the counter)")
    start(rig, dye_plan(86_400))                 # running, slow: nothing moves in a request
    return rig


def _one(rig, line):
    frames = [f for f in rig.raw(line, wait_s=1.0) if f.kind == proto.RESPONSE]
    assert len(frames) == 1, frames
    return frames[0]


def test_bad_crc_is_refused_and_not_executed(running):
    before = _state(running)
    line = proto.encode_request("hilcrc1", "therapy.stop", {})
    bad = line[:-3] + (b"0" if line[-3:-2] != b"0" else b"1") + line[-2:]
    f = _one(running, bad)
    assert f.id == "hilcrc1" and f.name == "err" and f.body["code"] == "BAD_CRC"
    assert _state(running) == before


@pytest.mark.parametrize("junk", [b"hello world\n", b"@1 status {}\n", b"=1 ok {}*00000000\n",
                                  b"@x therapy.stop {\"a\":1.5}*12345678\n",
                                  b"\x7f\x01garbage\n"])
def test_junk_gets_an_error_frame(running, junk):
    before = _state(running)
    f = _one(running, junk)
    assert f.name == "err" and f.body["code"] in ("BAD_FRAME", "BAD_CRC")
    assert _state(running) == before


def test_over_long_line(running):
    before = _state(running)
    pad = "x" * 1100
    f = _one(running, b"@hillong1 refill {\"volume_nl\":1,\"pad\":\"" + pad.encode() + b"\"}*0\n")
    assert f.name == "err" and f.body["code"] == "TOO_LONG"
    assert _state(running) == before
    # the link is usable at once afterwards
    f = _one(running, running.frame("hillong1", "status"))  # signed now: the next seq
    assert f.name == "ok"


def test_wrong_key_is_refused_then_throttled(running):
    before = _state(running)
    c = running.client
    good = c.keys
    uid = c.info["uid"]
    c.keys = {uid: {"clinician": "00" * 32, "patient": "00" * 32}}
    try:
        with pytest.raises(AuthError) as e:
            c.handshake()
        assert e.value.code == "AUTH_FAILED"
        with pytest.raises(AuthError) as e:
            c.handshake()
        assert e.value.code == "THROTTLED"
    finally:
        c.keys = good
    running.connect()                             # waits the throttle out
    after = _state(running)
    # the wait lets time run: the slow plan may make one step meanwhile, nothing else changes
    keep = ("therapy", "plan_crc", "rate_nl_day", "alarms")
    assert {k: after[0][k] for k in keep} == {k: before[0][k] for k in keep}
    assert 0 <= after[0]["delivered_steps"] - before[0]["delivered_steps"] <= 1


def test_roles_are_enforced(running):
    before = _state(running)
    with running.as_role("patient") as c:
        with pytest.raises(AuthError) as e:
            c.therapy_stop()
        assert e.value.code == "FORBIDDEN"
    with running.as_role("none") as c:
        with pytest.raises(AuthError) as e:
            c.status()
        assert e.value.code == "AUTH_REQUIRED"
    assert _state(running) == before


# ------------------------------------------------------------------ conformance (issue 13)

def _ok(c, cmd, args=None, seen=None):
    """Request, then validate the answer here too (the hook does it as well)."""
    res = c.request(cmd, args)
    assert protocol.check_result(cmd, res) == [], (cmd, res)
    if seen is not None:
        seen.add(cmd)
    return res


def _err(c, cmd, args, code, seen=None):
    with pytest.raises((DeviceError, AuthError)) as e:
        c.request(cmd, args)
    assert e.value.code == code, (cmd, e.value)
    assert protocol.check_error(cmd, {"code": e.value.code, "message": "m"}) == []
    if seen is not None:
        seen.add((cmd, code))


def _patient_plan():
    """A plan whose patient bolus is short and whose lockout is the shortest allowed."""
    return dye_plan(86_400, patient={"ng": 1_000, "dur_s": 5, "lockout_s": 60, "max_24h": 48})


def test_every_command_answers_as_the_schema_says(rig):
    """Each command of the schema is sent; its answer validates; each command's own error
    codes that a rig can be brought to answer quickly are provoked and validated."""
    c = rig.client
    seen, errs = set(), set()
    _ok(c, "status", seen=seen)
    _ok(c, "plan.get", seen=seen)
    _ok(c, "clock.get", seen=seen)
    _ok(c, "clock.set", {"epoch_s": 1_799_020_800, "offset_s": 3600,
                         "next_change_epoch_s": 1_806_800_400, "next_offset_s": 7200}, seen)
    step = _ok(c, "calib.get", seen=seen)["step_pl"]
    _ok(c, "calib.set", {"step_pl": step}, seen)
    _err(c, "plan.set", {"plan": dye_plan(-1)}, "PLAN_INVALID", errs)
    _ok(c, "plan.set", {"plan": dye_plan(86_400)}, seen)
    _err(c, "bolus", {}, "BOLUS_NOT_ALLOWED", errs)
    _ok(c, "plan.set", {"plan": _patient_plan()}, seen)
    _ok(c, "refill", {"volume_nl": 10_000_000}, seen)
    _err(c, "motor.run", {"steps": 2}, "THERAPY_RUNNING", errs)
    _err(c, "bolus", {}, "LOCKOUT", errs)
    rig.inst.advance_s(61)
    b = _ok(c, "bolus", seen=seen)
    assert b["dose_ng"] == 1_000
    _ok(c, "plan.get", seen=seen)
    rig.inst.advance_s(8)  # the bolus's 5 s are over: bolus.done
    _ok(c, "status", seen=seen)
    _ok(c, "alarms", seen=seen)
    _ok(c, "alarm.test", seen=seen)
    _ok(c, "ack", {}, seen)
    _ok(c, "therapy.stop", seen=seen)
    _err(c, "bolus", {}, "THERAPY_STOPPED", errs)
    run = _ok(c, "motor.run", {"steps": 2}, seen)
    assert run["steps"] == 2
    _ok(c, "therapy.resume", seen=seen)
    m = _ok(c, "maintenance", seen=seen)
    assert m["repl"] is True
    _ok(c, "therapy.resume", seen=seen)
    page = _ok(c, "log", {"since": 0, "limit": 3}, seen)
    assert 1 <= len(page["events"]) <= 3
    _ok(c, "hello", seen=seen)
    rig.connect(role="clinician")  # auth, through the client
    seen.add("auth")
    assert seen == set(protocol.commands()), set(protocol.commands()) - seen
    assert {("motor.run", "THERAPY_RUNNING"), ("bolus", "LOCKOUT"), ("bolus", "THERAPY_STOPPED"),
            ("plan.set", "PLAN_INVALID"), ("bolus", "BOLUS_NOT_ALLOWED")} <= errs


def test_every_event_fits_the_schema_pushed_and_logged(rig):
    """The events of a session (programming, refill, a patient bolus to its end, alarm test,
    stop, resume, maintenance, clock, calibration, logins): each pushed payload carries
    epoch_s and ms and fits the schema; each log entry fits it too; bolus.done carries the
    bolus's volume."""
    c = rig.client
    rig.set_clock(1_799_020_800)
    res = c.plan_set(_patient_plan())
    c.refill(10_000_000)
    rig.inst.advance_s(61)
    b = c.bolus()
    rig.inst.advance_s(8)
    c.status()
    c.alarm_test()
    c.calib_set(c.calib_get()["step_pl"])
    c.therapy_stop()
    c.request("maintenance")
    c.therapy_resume()
    pushed = c.events(wait_s=0.5)
    for ev in pushed:
        assert protocol.check_event(ev["name"], ev["data"]) == [], ev
        assert set(ev["data"]) >= {"epoch_s", "ms"}
    names = {e["name"] for e in pushed}
    assert {"plan.changed", "refill", "bolus.started", "bolus.done", "alarm.test", "calibrated",
            "therapy.stopped", "maintenance", "therapy.resumed", "cmd", "clock.set"} <= names, names
    done = [e for e in pushed if e["name"] == "bolus.done"]
    assert len(done) == 1 and done[0]["data"]["volume_nl"] == b["volume_nl"]
    assert done[0]["data"]["dose_ng"] == 1_000 and done[0]["data"]["halted"] is False
    changed = [e for e in pushed if e["name"] == "plan.changed"]
    assert changed[-1]["data"]["plan_crc"] == res["plan_crc"]
    log = rig.log_all()
    for ev in log:
        assert protocol.check_log_entry(ev) == [], ev
    assert [e for e in log if e["kind"] == "bolus.done"][-1]["data"]["volume_nl"] == b["volume_nl"]


def test_log_paging_behaves_as_documented(rig):
    c = rig.client
    for _ in range(6):
        c.alarm_test()
    first = c.log()  # defaults: since 0, limit 20
    assert 1 <= len(first["events"]) <= 20
    assert first["next"] == first["events"][-1]["seq"] + 1
    page, since = first, first["next"]
    while page["events"]:
        page = c.log(since=since)
        since = page["next"]
    assert page["next"] == since  # at the end: empty, next = the seq the next event gets
    top = c.log(since=since + 10**6)  # beyond the newest: the same
    assert top == {"events": [], "next": since}
    one = c.log(since=first["events"][0]["seq"], limit=1)
    assert len(one["events"]) == 1 and one["next"] == one["events"][0]["seq"] + 1
    for bad in ({"limit": 0}, {"limit": 51}, {"since": -1}, {"since": 10**9}):
        _err(c, "log", bad, "BAD_ARGS")
    # a page never holds more than about 480 bytes of events
    import json
    for page in (first, c.log(limit=50)):
        size = sum(len(json.dumps(e, separators=(",", ":"))) + 1 for e in page["events"])
        assert size <= 480 or len(page["events"]) == 1


@pytest.mark.parametrize("ex", protocol.schema()["x-plan-examples"], ids=lambda e: e["name"][:24])
def test_plan_crc_from_the_documented_rule_is_the_rigs(rig, ex):
    """The plan as written (defaults left out) is sent; the rig answers the canonical plan of
    the schema, and the CRC a few lines of standard library compute from the doc's rule
    (pumprig_hil/plan_crc.py) is the rig's plan_crc (in the answer, plan.get and hello)."""
    c = rig.client
    want = plan_crc.plan_crc(ex["input"])
    assert want == ex["plan_crc"]
    res = c.plan_set(ex["input"])
    assert res["plan_crc"] == want and res["plan"] == ex["plan"]
    assert plan_crc.normalise(ex["input"]) == res["plan"]
    assert c.plan_get()["plan_crc"] == want
    assert c.hello()["plan_crc"] == want
    rig.connect(role="clinician")


def test_bad_frames_get_their_error_codes(rig):
    """Each class of bad line gets its documented code and id, in a body the schema takes."""
    c = rig.client
    cases = []
    good = rig.frame("conf1", "status")
    crc_bad = good[:-3] + (b"0" if good[-3:-2] != b"0" else b"1") + good[-2:]
    cases.append((crc_bad, "conf1", "BAD_CRC"))
    cases.append((b"@conf2 status {\"a\":1.5}*" + b"%08x" % (__import__("zlib").crc32(
        b"@conf2 status {\"a\":1.5}")) + b"\n", "conf2", "BAD_FRAME"))
    cases.append((b"garbage without a trailer\n", "0", "BAD_FRAME"))
    cases.append((proto.encode_ok("conf3", {}), "0", "BAD_FRAME"))           # a response line
    cases.append((proto.encode_event(3, "reset", {}), "0", "BAD_FRAME"))     # an event line
    cases.append((proto.encode_request("0", "hello", {}), "0", "BAD_ARGS"))  # the reserved id
    cases.append((rig.frame("conf4", "no.such.cmd"), "conf4", "UNKNOWN_CMD"))
    cases.append((rig.frame("conf5", "status", {"x": 1}), "conf5", "BAD_ARGS"))
    cases.append((rig.frame("conf6", "log", {"limit": 99}), "conf6", "BAD_ARGS"))
    cases.append((proto.encode_request("conf7", "status", {}), "conf7", "AUTH_REQUIRED"))
    cases.append((b"@conf8 status {\"p\":\"" + b"x" * 1100 + b"\"}*00000000\n", "conf8", "TOO_LONG"))
    for line, rid, code in cases:
        f = _one(rig, line)
        assert f.name == "err" and f.id == rid and f.body["code"] == code, (line[:60], f)
        assert protocol.check_error(None, f.body) == [], f.body
    # a signed request with a wrong MAC, then with an old sequence number
    line = rig.frame("conf9", "status")
    at = line.rindex(b"|") + 1
    forged = line[:at] + (b"0" if line[at:at + 1] != b"0" else b"1") + line[at + 1:at + 32]
    covered = forged[:forged.rindex(b"*") if b"*" in forged else len(forged)]
    forged = covered + b"*%08x\n" % __import__("zlib").crc32(covered)
    f = _one(rig, forged)
    assert f.body["code"] == "BAD_MAC", f
    f = _one(rig, line)  # the genuine line, its seq not yet accepted: ok
    assert f.name == "ok"
    old = c.frame("status", None, req_id="conf10")[1]
    c._seq -= 2  # a sequence number at or below the last accepted one
    replay = c.frame("status", None, req_id="conf11")[1]
    assert _one(rig, old).name == "ok"
    f = _one(rig, replay)
    assert f.body["code"] == "REPLAY", f
    c._seq += 2


def test_retries_are_answered_not_executed_again(rig):
    c = rig.client
    c.events()
    line = rig.frame("retry1", "alarm.test")
    a = [f for f in rig.raw(line, wait_s=2.0) if f.kind == proto.RESPONSE]
    b = [f for f in rig.raw(line, wait_s=2.0) if f.kind == proto.RESPONSE]
    assert a[0].name == "ok" and (a[0].id, a[0].body, a[0].crc) == (b[0].id, b[0].body, b[0].crc)
    evs = [e for e in c.events(wait_s=0.3) if e["name"] == "alarm.test"]
    assert len(evs) == 1, evs  # run once
    other = rig.frame("retry1", "status")  # the same id, another request
    f = _one(rig, other)
    assert f.body["code"] == "BAD_FRAME" and f.id == "retry1"
    # a damaged copy first (BAD_CRC, not remembered), then the line: run once
    line = rig.frame("retry2", "alarm.test")
    bad = line[:-3] + (b"0" if line[-3:-2] != b"0" else b"1") + line[-2:]
    assert _one(rig, bad).body["code"] == "BAD_CRC"
    assert _one(rig, line).name == "ok"
    assert _one(rig, line).name == "ok"
    assert len([e for e in c.events(wait_s=0.3) if e["name"] == "alarm.test"]) == 1


def test_a_malformed_mac_is_bad_args_and_does_not_throttle(rig):
    """Issue 13: BAD_ARGS without spending the nonce or starting the throttle; the next
    right login on the same nonce succeeds at once."""
    c = rig.client
    hello = c.request("hello")
    for mac in ("zz" * 32, "ab" * 31, "AB" * 32):
        with pytest.raises(DeviceError) as e:
            c.request("auth", {"role": "clinician", "mac": mac, "cnonce": "00" * 16})
        assert e.value.code == "BAD_ARGS"
    from pumpcore import auth
    key = c._key_for(hello["uid"], "clinician")
    cn = "01" * 16
    r = c.request("auth", {"role": "clinician", "cnonce": cn,
                           "mac": auth.mac_hex(key, hello["nonce"], "clinician", hello["uid"], cn)})
    assert r == {"role": "clinician"}
    rig.connect(role="clinician")


def _doc_frames():
    frame = r"[@=!][A-Za-z0-9_-]+ [a-z0-9._]+ \{[^`\n]*\*[0-9a-f]{8}"
    if not DOC.exists():  # the suite copied out of a checkout: the doc is not beside it
        pytest.skip("docs/protocol.md is not in this tree (its frames are checked from a checkout)")
    text = DOC.read_text()
    out = [m.group(1) for m in re.finditer(r"^(?:[<>] |line:\s+)?(%s)(?:\\n)?$" % frame, text, re.M)]
    return out + [m.group(1) for m in re.finditer(r"`(%s)(?:\\n)?`" % frame, text)]


def test_documented_example_frames_round_trip(rig):
    """Every complete frame line of docs/protocol.md, sent to the rig, gets the answer the doc
    gives (or says): requests are answered under their id, in a body the schema takes; lines
    that are answers or events get BAD_FRAME with id 0."""
    frames = _doc_frames()
    assert len(frames) >= 7
    answers = {}
    for text in frames:
        if text.startswith("="):
            answers[text.split(" ", 1)[0][1:]] = text
    for text in frames:
        f = _one(rig, text.encode() + b"\n")
        kind, rid = text[0], text.split(" ", 1)[0][1:]
        cmd = text.split(" ")[1]
        if kind != "@":
            assert f.id == "0" and f.body["code"] == "BAD_FRAME", (text, f)
            continue
        assert f.id == rid, (text, f)
        assert protocol.check_response(cmd, f) == [], (text, f)
        if rid == "7":
            # the documented answer, byte for byte
            assert proto.encode_err(f.id, f.body["code"], f.body["message"]).decode().rstrip("\n") \
                == answers["7"]
        if cmd == "hello":
            assert f.name == "ok"
        if cmd == "auth":
            assert f.body["code"] == "AUTH_FAILED"  # the doc's nonce is not this rig's
        if cmd == "therapy.stop":
            assert f.body["code"] == "AUTH_REQUIRED"  # no session after the failed auth
    rig.connect(role="clinician")


def test_schema_examples_round_trip(rig):
    """Each command example of the schema is sent with its arguments; the answer fits the
    schema, and equals the example where the answer does not depend on time or chance."""
    require(rig, "steps", "starting a plan for the protocol checks (start() samples the counter)")
    c = rig.client
    start(rig, _patient_plan())
    exact = ("calib.set", "alarm.test", "therapy.stop", "therapy.resume", "clock.set")
    for name, cdef in protocol.commands().items():
        for ex in cdef["examples"]:
            if name in ("auth", "hello", "bolus", "plan.set", "motor.run", "ack"):
                continue  # below, in the states they need
            if name == "calib.set":
                ex = {"args": {"step_pl": c.calib_get()["step_pl"]},
                      "result": {"step_pl": c.calib_get()["step_pl"]}}
            if name == "therapy.stop":
                continue
            res = _ok(c, name, ex["args"])
            if name in exact:
                assert res == ex["result"], name
            if name == "maintenance":
                c.therapy_resume()
    pex = protocol.commands()["plan.set"]["examples"][0]
    assert _ok(c, "plan.set", pex["args"]) == pex["result"]
    ack = _ok(c, "ack", {"kind": "LOW"})
    assert ack["acked"] in ([], ["LOW"])
    assert _ok(c, "therapy.stop") == protocol.commands()["therapy.stop"]["examples"][0]["result"]
    res = _ok(c, "motor.run", {"steps": 3})
    assert res["steps"] == 3
    hello = _ok(c, "hello")
    assert protocol.check_result("hello", hello) == []
    rig.connect(role="clinician")
