"""The host client against a real pumpcore Server served on a pty."""

import os

import pytest
from pumpcore import proto
from pumprig import keys as keystore
from pumprig.client import Client
from pumprig.errors import AuthError, DeviceError, PortError, ProtocolError, RigTimeout
from rigpty import CLINICIAN_KEY, KEYS, PATIENT_KEY, UID, PtyRig, take_output


@pytest.fixture
def rig():
    r = PtyRig()
    yield r
    r.close()


def test_handshake_and_status(rig):
    with Client(rig.path, role="patient", keys=KEYS, timeout=1.0) as c:
        assert c.info["uid"] == UID and c.info["protocol"] == proto.PROTOCOL_VERSION
        assert c.info["plan_crc"] == "1234abcd"
        s = c.status()
        assert s["reservoir_nl"] == 18500000 and s["alarms"] == ["CLOCK"]
        assert rig.srv.role == "patient"
        # many round trips: each is a few ms on a pty (no fixed sleeps in the client)
        for _ in range(20):
            c.status()
    assert rig.app.calls.count("status") == 21


def test_key_store_lookup(rig, tmp_path):
    store = keystore.KeyStore(tmp_path)
    store.save(UID, {"patient": PATIENT_KEY, "clinician": CLINICIAN_KEY})
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    with Client(rig.path, role="clinician", home=tmp_path, timeout=1.0) as c:
        assert c.plan_set({"drug": "morphine"})["plan"] == {"drug": "morphine"}
    empty = tmp_path / "empty"
    with pytest.raises(AuthError, match="provision"):
        Client(rig.path, role="clinician", home=empty, timeout=1.0).open()


def test_patient_cannot_set_plan(rig):
    with Client(rig.path, role="patient", keys=KEYS, timeout=1.0) as c:
        with pytest.raises(AuthError) as e:
            c.plan_set({"drug": "x"})
        assert e.value.code == proto.FORBIDDEN
        assert c.plan_get()["plan"] is None
    assert "plan.set" not in rig.app.calls


def test_no_role_reads_nothing(rig):
    with Client(rig.path, role=None, timeout=1.0) as c:
        assert c.info["nonce"]
        with pytest.raises(AuthError) as e:
            c.status()
        assert e.value.code == proto.AUTH_REQUIRED


def test_wrong_key_refused_then_throttled(rig):
    wrong = {UID: {"patient": "ab" * 32, "clinician": "cd" * 32}}
    with pytest.raises(AuthError) as e:
        Client(rig.path, role="clinician", keys=wrong, timeout=1.0).open()
    assert e.value.code == proto.AUTH_FAILED
    assert "cd" * 32 not in str(e.value)
    with pytest.raises(AuthError) as e:
        Client(rig.path, role="clinician", keys=KEYS, timeout=1.0).open()
    assert e.value.code == proto.THROTTLED
    rig.now_ms += 1000
    with Client(rig.path, role="clinician", keys=KEYS, timeout=1.0) as c:
        c.therapy_stop()
    assert rig.app.calls == ["therapy.stop"]


def test_retry_reuses_id_and_executes_once(rig):
    with Client(rig.path, role="patient", keys=KEYS, timeout=0.2) as c:
        # the rig answers, but the answer is lost: the client times out and resends
        orig_feed = rig.srv.feed
        state = {"lost": 0}

        def feed(data, now_ms):
            orig_feed(data, now_ms)
            if state["lost"] == 0:
                state["lost"] = 1
                take_output(rig.srv)  # the response vanishes on the line

        rig.srv.feed = feed
        res = c.bolus()
        rig.srv.feed = orig_feed
        assert res["started_epoch_s"] == 1
        assert rig.app.boluses == 1
        ids = [proto.decode(x).id for x in b"".join(rig.received).split(b"\n") if b" bolus " in x]
        assert len(ids) == 2 and ids[0] == ids[1]


def test_request_lost_is_resent(rig):
    with Client(rig.path, role="patient", keys=KEYS, timeout=0.2) as c:
        rig.drop = 1
        assert c.bolus()["started_epoch_s"] == 1
        assert rig.app.boluses == 1


def test_timeout(rig):
    with Client(rig.path, role="patient", keys=KEYS, timeout=0.1) as c:
        rig.drop = 10
        with pytest.raises(RigTimeout, match="no answer to status"):
            c.status()
        rig.drop = 0


def test_noise_and_events_are_sorted_out(rig):
    with Client(rig.path, role="patient", keys=KEYS, timeout=1.0) as c:
        rig.garbage = b"MicroPython v1.29 banner\r\n>>> \r\n" + proto.encode_event(7, "alarm.raised", {"kind": "LOW"})
        assert c.status()["battery_mv"] == 3650
        rig.push_event("refill", {"reservoir_nl": 20000000})
        ev = c.events(wait_s=1.0)
        assert [e["name"] for e in ev] == ["alarm.raised", "refill"]
        assert ev[0] == {"seq": 7, "name": "alarm.raised", "data": {"kind": "LOW"}}
        assert c.events() == []


def test_malformed_frames_change_nothing(rig):
    with Client(rig.path, role="clinician", keys=KEYS, timeout=1.0) as c:
        good = proto.encode_request("m1", "bolus", {})
        bad_crc = good[:-3] + (b"0" if good[-3:-2] != b"0" else b"1") + good[-2:]
        for junk in (bad_crc, b"@m2 bolus " + b"x" * 2000 + b"\n", b"\x00\xff junk\n"):
            c._write(junk)
        c._write(good.replace(b"bolus", b"boluz"))  # damaged in flight: CRC no longer fits
        assert c.status()["reservoir_nl"] == 18500000
        assert rig.app.calls == ["status"]
        assert rig.app.boluses == 0


def test_device_error_and_wrong_version():
    r = PtyRig(protocol=1)  # firmware from before signed requests
    try:
        with pytest.raises(ProtocolError, match="protocol 1"):
            Client(r.path, role="patient", keys=KEYS, timeout=1.0).open()
    finally:
        r.close()
    r = PtyRig()
    try:
        with Client(r.path, role="clinician", keys=KEYS, timeout=1.0) as c:
            with pytest.raises(DeviceError) as e:
                c.request("refill", {"volume": 1})
            assert e.value.code == proto.BAD_ARGS
    finally:
        r.close()


def test_port_errors(tmp_path):
    with pytest.raises(PortError, match="no such port"):
        Client(str(tmp_path / "ttyNOPE"), keys=KEYS).open()
    with pytest.raises(PortError):
        Client("", keys=KEYS)
    with pytest.raises(PortError):
        Client("bogus://x", keys=KEYS).open()


def test_port_busy(rig):
    with Client(rig.path, role="patient", keys=KEYS, timeout=1.0):
        with pytest.raises(PortError, match="busy"):
            Client(rig.path, role="patient", keys=KEYS, timeout=1.0).open()


def test_loop_url_times_out_cleanly():
    # loop:// echoes our own request back: a request frame is not a response
    with pytest.raises(RigTimeout):
        Client("loop://", role=None, timeout=0.05).open()


def test_a_refill_is_resent_with_the_same_id_after_the_rig_reset(rig):
    """Finding 4 (the client's side): the rig reset under a refill (its session gone). The
    client logs in again and resends the same line, same id, which the firmware recognises
    by its committed request key; a command without a persisted key is not resent."""
    with Client(rig.path, role="clinician", keys=KEYS, timeout=0.3) as c:
        rig.drop = 1  # the request is lost with the power...
        rig.srv.end()  # ...and the rig restarts: no session, no role
        res = c.refill(18_000_000, 500_000)
        assert res["bridge_nl"] == 300000
        assert rig.app.calls.count("refill") == 1
        sent = [proto.decode(line + b"\n") for chunk in rig.received
                for line in chunk.split(b"\n") if b" refill " in line]
        assert len(sent) == 3 and len({f.id for f in sent}) == 1  # lost, refused, answered
        rig.srv.end()
        with pytest.raises(AuthError):
            c.clock_set(1_767_225_600, 0)


def test_session_ended_by_a_late_close_is_logged_into_again(rig, monkeypatch):
    """Issue 14 (monitor): with `monitor` letting go of the port between polls, the rig may
    see its close only after the next program's hello (the challenge is gone: "no challenge")
    or after its login (a read gets AUTH_REQUIRED). The client logs in again in both cases
    instead of failing the command."""
    real = Client.request
    ended = []

    def request(self, cmd, args=None, retries=2):
        r = real(self, cmd, args, retries)
        if cmd == "hello" and not ended:
            ended.append(cmd)
            rig.srv.end()          # the previous program's close, seen after our hello
        return r

    monkeypatch.setattr(Client, "request", request)
    with Client(rig.path, role="patient", keys=KEYS, timeout=1.0) as c:
        assert ended and rig.srv.role == "patient"
        rig.srv.end()              # ... or seen after our login
        assert c.status()["reservoir_nl"] == 18500000
        assert rig.srv.role == "patient"


def test_a_read_after_the_session_ended_logs_in_again(rig):
    """The second case alone: a status after the session ended under it (was AUTH_REQUIRED)."""
    with Client(rig.path, role="patient", keys=KEYS, timeout=1.0) as c:
        rig.srv.end()
        assert c.status()["reservoir_nl"] == 18500000
