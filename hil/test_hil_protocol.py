"""Protocol robustness on the real link: damaged, junk, over-long and unauthorised requests
get error frames and change nothing."""

import pytest
from _plans import dye_plan, start
from pumpcore import proto
from pumprig.errors import AuthError
from pumprig_hil.plugin import require

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
