"""HMAC, the challenge, throttling and the server's role handling (CPython and MicroPython)."""

from binascii import hexlify

from _util import ClientSession, raises, take_output
from pumpcore import auth, proto, server, session

# The documented test key (docs/protocol.md): never a real pump's key.
TEST_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
CLIN_KEY = "c1" * 32
NONCE = "00112233445566778899aabbccddeeff"
CNONCE = "ffeeddccbbaa99887766554433221100"


# RFC 4231 test case 2 and 6 (key longer than a block)
def test_hmac_rfc4231():
    mac = auth.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert hexlify(mac) == b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    mac = auth.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert hexlify(mac) == b"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_hmac_matches_cpython_hmac():
    try:
        import hashlib
        import hmac
    except ImportError:
        return  # MicroPython: the RFC vectors above cover it
    for n in (0, 1, 16, 63, 64, 65, 200):
        key = bytes(range(n % 256)) if n < 256 else b"k" * n
        for msg in (b"", b"x", b"abc" * 50):
            assert auth.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_worked_example():
    # the example in docs/protocol.md
    uid = "e6614103e7452d2f"
    msg = auth.challenge(NONCE, "clinician", uid, CNONCE)
    assert msg == (b"00112233445566778899aabbccddeeff:clinician:e6614103e7452d2f:"
                   b"ffeeddccbbaa99887766554433221100")
    mac = auth.mac_hex(TEST_KEY, NONCE, "clinician", uid, CNONCE)
    assert mac == WORKED["mac"]
    assert auth.verify(TEST_KEY, NONCE, "clinician", uid, CNONCE, mac)
    assert auth.verify(TEST_KEY, NONCE, "clinician", uid, CNONCE, mac.upper())
    assert not auth.verify(TEST_KEY, NONCE, "patient", uid, CNONCE, mac)
    assert not auth.verify(TEST_KEY, NONCE, "clinician", "other", CNONCE, mac)
    assert not auth.verify(TEST_KEY, NONCE, "clinician", uid, CNONCE[:-1] + "1", mac)
    assert not auth.verify(TEST_KEY, NONCE, "clinician", uid, CNONCE, mac[:-1] + "0")
    assert not auth.verify(TEST_KEY, NONCE, "clinician", uid, CNONCE, None)
    line = proto.encode_request("h1a2b3c-2", "auth",
                                {"role": "clinician", "mac": mac, "cnonce": CNONCE})
    assert line == WORKED["auth"]
    # the session key and the first signed request of the example
    k = auth.session_key(TEST_KEY, NONCE, CNONCE, "clinician", uid)
    assert hexlify(k).decode() == WORKED["session_key"]
    line = auth.sign_request(auth.pads(k), "h1a2b3c-3", "therapy.stop", {}, 1)
    assert line == WORKED["signed"]
    assert auth.request_mac(auth.pads(k), b"@h1a2b3c-3 therapy.stop {}|1|") == line[-42:-10]


# docs/protocol.md, "Worked authentication example" (protocol 2)
WORKED = {
    "mac": "347d9b719f3c61947da0410144793b52cc4bb45388d21b5c6eedab35fdfcfa61",
    "auth": b'@h1a2b3c-2 auth {"cnonce":"ffeeddccbbaa99887766554433221100","mac":"347d9b719f3c6194'
            b'7da0410144793b52cc4bb45388d21b5c6eedab35fdfcfa61","role":"clinician"}*d307ce5f\n',
    "session_key": "582aa3125591da9070010fb7c7de826e25b1c6a287ffb55c3652b4d7248356df",
    "signed": b"@h1a2b3c-3 therapy.stop {}|1|354dc3d9980591afe7d9f639e1457f23*86540725\n",
}


def test_equal():
    assert auth.equal(b"abc", b"abc") and auth.equal("abc", "abc")
    assert not auth.equal(b"abc", b"abd") and not auth.equal(b"abc", b"ab")
    assert not auth.equal(b"", b"a") and auth.equal(b"", b"")


def test_key_bytes():
    assert auth.key_bytes(TEST_KEY) == bytes(range(32))
    assert raises(auth.AuthKeyError, auth.key_bytes, "zz" * 16)
    assert raises(auth.AuthKeyError, auth.key_bytes, "00" * 8)
    assert raises(auth.AuthKeyError, auth.key_bytes, 5)


def test_nonce():
    n = auth.new_nonce(lambda k: bytes(range(k)))
    assert n == "000102030405060708090a0b0c0d0e0f"


def test_throttle_doubles_to_60s():
    delays = [auth.throttle_ms(n) for n in range(9)]
    assert delays == [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
    assert auth.throttle_ms(10_000) == 60000  # a count restored from a record: still capped


# ---------------------------------------------------------------- server


class FakeApp:
    def __init__(self):
        self.calls = []
        self.counter = 0
        self.events = []
        self.full = False  # log_event raises MemoryError (a heap without room for the event)

    def log_event(self, kind, data, now):
        if self.full:
            raise MemoryError
        self.events.append((kind, data))

    def plan_crc(self):
        return "0badf00d"

    def call(self, cmd, args, role, req_id, now_ms):
        self.calls.append((cmd, role, req_id))
        if cmd == "bolus":
            self.counter += 1
            return {"dose_ng": 100000, "n": self.counter}
        if cmd == "therapy.stop":
            raise proto.CommandError(proto.SAFE_STATE, "already safe")
        if cmd == "calib.get":
            raise RuntimeError("boom")
        if cmd == "log":
            return {"events": ["x" * 2000]}
        return {"cmd": cmd}


UID = "e6614103e7452d2f"


def _server():
    app = FakeApp()
    info = {"firmware": "0.1.0", "board": "sim", "uid": UID, "step_pl": 250000}
    srv = server.Server(app, {"patient": TEST_KEY, "clinician": CLIN_KEY}, info, lambda n: bytes(n))
    return srv, app


class Talk:
    def __init__(self, srv):
        self.srv = srv
        self.n = 0
        self.now_ms = 100000
        self.cs = ClientSession()
        self.last = None

    def raw(self, data):
        self.srv.feed(data, self.now_ms)
        out = take_output(self.srv)
        return [proto.decode(line) for line in out.split(b"\n") if line]

    def req(self, cmd, args=None, rid=None):
        if rid is None:
            self.n += 1
            rid = "t%d" % self.n
        self.last = self.cs.line(rid, cmd, args)
        return self.send(self.last, rid)

    def send(self, line, rid):
        frames = self.raw(line)
        assert len(frames) == 1, frames
        f = frames[0]
        assert f.error is None and f.kind == "=" and f.id == rid
        return f

    def again(self):
        """The last request line sent again (a retry)."""
        return self.send(self.last, proto.decode(self.last).id)

    def login(self, role, key):
        hello = self.req("hello").body
        f = self.req("auth", self.cs.auth_args(key, hello, role))
        if f.name == "ok":
            self.cs.logged_in()
        return f


def test_hello():
    srv, app = _server()
    t = Talk(srv)
    b = t.req("hello").body
    assert b["protocol"] == proto.PROTOCOL_VERSION and b["uid"] == UID and b["plan_crc"] == "0badf00d"
    assert b["nonce"] == "00" * 16 and b["firmware"] == "0.1.0"
    assert b["limits"]["max_line"] == 1024
    assert TEST_KEY not in repr(b) and CLIN_KEY not in repr(b)


def test_roles():
    srv, app = _server()
    t = Talk(srv)
    f = t.req("status")
    assert f.name == "err" and f.body["code"] == proto.AUTH_REQUIRED
    assert t.login("patient", TEST_KEY).body == {"role": "patient"}
    assert t.req("status").body == {"cmd": "status"}
    f = t.req("plan.set", {"plan": {}})
    assert f.body["code"] == proto.FORBIDDEN
    assert app.calls == [("status", "patient", "t4")]
    assert t.login("clinician", CLIN_KEY).name == "ok"
    assert t.req("plan.set", {"plan": {}}).name == "ok"
    assert t.req("status").name == "ok"  # clinician may do what a patient may
    t.req("hello")
    assert srv.role == "none"
    assert t.req("status").body["code"] == proto.AUTH_REQUIRED


def test_wrong_key_throttled():
    srv, app = _server()
    t = Talk(srv)
    f = t.login("clinician", TEST_KEY)
    assert f.body["code"] == proto.AUTH_FAILED
    assert TEST_KEY not in f.body["message"] and CLIN_KEY not in f.body["message"]
    # the right key, too soon: refused without looking at it
    f = t.login("clinician", CLIN_KEY)
    assert f.body["code"] == proto.THROTTLED
    assert srv.role == "none"
    t.now_ms += 1000
    f = t.login("clinician", TEST_KEY)
    assert f.body["code"] == proto.AUTH_FAILED
    t.now_ms += 1999
    assert t.login("clinician", CLIN_KEY).body["code"] == proto.THROTTLED
    t.now_ms += 1
    assert t.login("clinician", CLIN_KEY).body == {"role": "clinician"}
    # success reset the delay
    assert t.login("patient", CLIN_KEY).body["code"] == proto.AUTH_FAILED
    t.now_ms += 1000
    assert t.login("patient", TEST_KEY).name == "ok"
    assert all(c[0] != "auth" for c in app.calls) and app.calls == []


def test_a_failed_login_counts_when_its_audit_event_cannot_be_logged():
    """The Server assigns its login state from what pumpcore.session.login returns, and the
    audit event is logged before that: a MemoryError while logging auth.fail must neither
    leave the failure uncounted nor the challenge open for another try. The failure not
    logged goes with the next auth.fail."""
    srv, app = _server()
    t = Talk(srv)
    hello = t.req("hello").body
    args = t.cs.auth_args(TEST_KEY, hello, "clinician")  # the patient's key: wrong
    app.full = True
    f = t.req("auth", args)
    assert f.body == {"code": proto.AUTH_FAILED, "message": "wrong key for clinician"}
    assert srv.auth_failures == 1 and srv.auth_until_ms == t.now_ms + 1000
    assert srv.nonce is None and srv.role == "none" and app.events == []
    app.full = False
    t.now_ms += 1000
    f = t.req("auth", args)  # the same answer to the same challenge: no challenge left
    assert f.body == {"code": proto.AUTH_FAILED, "message": "no challenge: send hello first"}
    assert srv.auth_failures == 1
    assert t.login("clinician", TEST_KEY).body["code"] == proto.AUTH_FAILED
    assert srv.auth_failures == 2
    assert app.events == [("auth.fail", {"role": "clinician", "failures": 2,
                                         "reason": "wrong key"})]


def test_throttle_state_doubles_to_60s_and_resets():
    # the throttle is plain data on the server: failures in a row, board time of the next try
    srv, app = _server()
    t = Talk(srv)
    assert srv.auth_failures == 0 and srv.auth_until_ms == 0
    delays = []
    for i in range(9):
        assert t.login("clinician", TEST_KEY).body["code"] == proto.AUTH_FAILED
        assert srv.auth_failures == i + 1
        delays.append(srv.auth_until_ms - t.now_ms)
        t.now_ms += delays[-1] - 1
        f = t.login("clinician", CLIN_KEY)
        assert f.body == {"code": proto.THROTTLED, "message": "too many failures: retry in 1 ms"}
        t.now_ms += 1
    assert delays == [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
    assert t.login("clinician", CLIN_KEY).body == {"role": "clinician"}
    assert srv.auth_failures == 0 and srv.auth_until_ms == 0
    assert t.login("patient", CLIN_KEY).body["code"] == proto.AUTH_FAILED
    assert srv.auth_until_ms - t.now_ms == 1000


def test_nonce_single_use_and_required():
    srv, app = _server()
    t = Talk(srv)
    f = t.req("auth", {"role": "patient", "mac": "00" * 32, "cnonce": CNONCE})
    assert f.body["code"] == proto.AUTH_FAILED
    t.now_ms += 1000
    hello = t.req("hello").body
    args = t.cs.auth_args(TEST_KEY, hello, "patient")
    assert t.req("auth", args).name == "ok"
    # the same answer again (a replay, new id): the challenge is spent
    assert t.req("auth", args).body["code"] == proto.AUTH_FAILED
    args["role"] = "root"
    assert t.req("auth", args).body["code"] == proto.BAD_ARGS
    args["role"] = "patient"
    args["cnonce"] = "short"
    assert t.req("auth", args).body["code"] == proto.BAD_ARGS


def test_missing_key_role_cannot_log_in():
    srv = server.Server(FakeApp(), {"patient": TEST_KEY}, {"uid": UID}, lambda n: bytes(n))
    t = Talk(srv)
    assert t.login("clinician", CLIN_KEY).body["code"] == proto.AUTH_FAILED
    t.now_ms += 1000
    assert t.login("patient", TEST_KEY).name == "ok"


def test_retry_same_id_executes_once():
    srv, app = _server()
    t = Talk(srv)
    t.login("patient", TEST_KEY)
    a = t.req("bolus", rid="b1")
    b = t.again()  # the same line: same id, same sequence number
    assert a.body == b.body == {"dose_ng": 100000, "n": 1}
    assert app.counter == 1
    f = t.req("status", rid="b1")
    assert f.body["code"] == proto.BAD_FRAME
    b2 = t.req("bolus", rid="b2")
    assert b2.body["n"] == 2
    line = t.last
    for i in range(3):
        t.req("status", rid="s%d" % i)
    assert t.send(line, "b2").body["n"] == 2  # still remembered after 3 others
    t.req("status", rid="s3")
    # forgotten after 4 others: its sequence number is spent, so it is not run again
    f = t.send(line, "b2")
    assert f.body["code"] == proto.REPLAY and app.counter == 2


def test_app_errors():
    srv, app = _server()
    t = Talk(srv)
    t.login("clinician", CLIN_KEY)
    f = t.req("therapy.stop")
    assert f.body == {"code": "SAFE_STATE", "message": "already safe"}
    assert t.req("calib.get").body["code"] == proto.INTERNAL
    assert t.req("log").body["code"] == proto.TOO_LONG  # a result too long for one frame
    assert t.req("fly").body["code"] == proto.UNKNOWN_CMD
    assert t.req("status", {"x": 1}).body["code"] == proto.BAD_ARGS
    assert t.req("refill", {}).body["code"] == proto.BAD_ARGS
    assert t.req("status").name == "ok"


def test_malformed_lines():
    srv, app = _server()
    t = Talk(srv)
    t.login("clinician", CLIN_KEY)
    line = bytearray(proto.encode_request("q1", "bolus", {}))
    line[5] ^= 1
    fs = t.raw(bytes(line))
    assert len(fs) == 1 and fs[0].id == "q1" and fs[0].body["code"] == proto.BAD_CRC
    fs = t.raw(b"MicroPython v1.29 on 2025-01-01; banner\r\n")
    assert len(fs) == 1 and fs[0].id == "0" and fs[0].body["code"] == proto.BAD_FRAME
    assert t.raw(b"\r\n\n") == []
    fs = t.raw(b"@long1 plan.set " + b"x" * 3000 + b"\n")
    assert len(fs) == 1 and fs[0].id == "long1" and fs[0].body["code"] == proto.TOO_LONG
    fs = t.raw(proto.encode_ok("r1", {}))
    assert fs[0].id == proto.NO_ID and fs[0].body["code"] == proto.BAD_FRAME  # issue 13: id 0
    assert app.calls == []
    # after the bad CRC, the same id with the right frame executes (errors are not cached)
    assert t.req("bolus", rid="q1").body["n"] == 1


def test_feed_in_pieces_and_bounded():
    srv, app = _server()
    line = proto.encode_request("p1", "hello", {})
    for i in range(len(line)):
        srv.feed(line[i : i + 1], 0)
    f = proto.decode(take_output(srv))
    assert f.id == "p1" and f.body["protocol"] == proto.PROTOCOL_VERSION
    # a long run of bytes without a newline: the buffer stays bounded
    for _ in range(50):
        srv.feed(b"@z9 " + b"y" * 500, 0)
        assert len(srv._buf) <= proto.MAX_LINE
    srv.feed(b"\n" + proto.encode_request("p2", "hello", {}), 0)
    fs = [proto.decode(x) for x in take_output(srv).split(b"\n") if x]
    assert [(f.id, f.name) for f in fs] == [("z9", "err"), ("p2", "ok")]
    assert fs[0].body["code"] == proto.TOO_LONG


def test_events():
    srv, app = _server()
    assert srv.event("alarm.raised", {"kind": "LOW"}) == 1
    assert srv.event("refill", {}) == 2
    fs = [proto.decode(x) for x in take_output(srv).split(b"\n") if x]
    assert [(f.kind, f.id, f.name) for f in fs] == [("!", "1", "alarm.raised"), ("!", "2", "refill")]
    assert take_output(srv) == b""
    for _ in range(500):
        srv.event("alarm.raised", {"kind": "LOW"})
    assert len(take_output(srv)) <= 8192 and srv.dropped_events > 0


# ------------------------------------------------- issue 12: sessions, throttle, audit


def test_signed_requests_only_after_auth():
    """Finding 2: after `auth` the role applies only to requests signed with the session key;
    a second program on the line without the key gets nothing but `hello`."""
    srv, app = _server()
    t = Talk(srv)
    assert t.login("clinician", CLIN_KEY).name == "ok"
    assert t.req("therapy.stop").body["code"] == proto.SAFE_STATE  # signed: ran (FakeApp)
    # the other program: plain frames, as the old protocol allowed
    other = Talk(srv)
    other.n = 100  # its own ids
    for cmd in ("therapy.stop", "clock.set", "alarm.test", "status", "log"):
        f = other.req(cmd, {"epoch_s": 1, "offset_s": 0} if cmd == "clock.set" else None)
        assert f.body["code"] == proto.AUTH_REQUIRED, (cmd, f.body)
    # signed with a key it does not have: refused before anything runs
    forged = ClientSession()
    forged.pad = auth.pads(b"\x00" * 32)
    f = other.send(forged.line("x1", "therapy.stop", {}, seq=1000), "x1")
    assert f.body["code"] == proto.BAD_MAC
    assert other.req("hello").name == "ok"  # hello alone is open (and ends the session)
    assert [c[0] for c in app.calls] == ["therapy.stop"]
    assert t.req("status").body["code"] == proto.AUTH_REQUIRED  # the old signer's session ended


def test_replayed_signed_frame_refused():
    """Finding 2: a signed frame replayed outside the retry record, or an old sequence
    number, is refused (REPLAY) and never runs."""
    srv, app = _server()
    t = Talk(srv)
    t.login("clinician", CLIN_KEY)
    t.req("bolus", rid="r1")
    old = t.last
    assert t.again().body["n"] == 1  # a retry (same id and seq): the recorded answer
    for i in range(4):
        t.req("status", rid="s%d" % i)
    f = t.send(old, "r1")
    assert f.body["code"] == proto.REPLAY and app.counter == 1
    # a new id with a used sequence number, correctly signed: refused
    f = t.send(t.cs.line("r2", "bolus", {}, seq=3), "r2")
    assert f.body["code"] == proto.REPLAY and app.counter == 1
    # a gap is fine: numbers only have to grow
    f = t.send(t.cs.line("r3", "bolus", {}, seq=50), "r3")
    assert f.body["n"] == 2
    # the frame altered after signing (CRC made right again): the MAC no longer matches
    line = t.cs.line("r4", "bolus", {}, seq=60)
    body = line[: line.rfind(b"*")].replace(b"r4", b"r5")
    from binascii import crc32

    forged = body + b"*%08x\n" % (crc32(body) & 0xFFFFFFFF)
    assert t.send(forged, "r5").body["code"] == proto.BAD_MAC and app.counter == 2


def test_malformed_trailer_is_bad_frame():
    srv, app = _server()
    t = Talk(srv)
    t.login("clinician", CLIN_KEY)
    good = t.cs.line("m1", "status", {}, seq=7)
    head = good[: good.rfind(b"|", 0, good.rfind(b"|"))]
    mac = good[-42:-10]
    for tail in (b"|07|" + mac, b"||" + mac, b"|7|" + mac[:-1], b"|7|" + mac.upper(),
                 b"|1234567890|" + mac, b"|x|" + mac):
        body = head + tail
        from binascii import crc32

        fs = t.raw(body + b"*%08x\n" % (crc32(body) & 0xFFFFFFFF))
        assert fs[0].body["code"] == proto.BAD_FRAME, tail
    assert app.calls == []


def test_link_down_and_idle_end_the_session():
    """Finding 2: the role ends with the connection (Server.end(True)), or after the idle time
    where the board cannot see the link."""
    srv, app = _server()
    t = Talk(srv)
    t.login("clinician", CLIN_KEY)
    srv.end(True)
    f = t.req("therapy.stop")
    assert f.body["code"] == proto.AUTH_REQUIRED and app.calls == []
    srv.idle_ms = 300000
    t.login("clinician", CLIN_KEY)
    t.now_ms += 300000
    assert t.req("alarm.test").name == "ok"  # within the idle time
    t.now_ms += 300001
    assert t.req("alarm.test").body["code"] == proto.AUTH_REQUIRED
    assert srv.role == "none" and srv.sess is None


def test_throttle_per_connection_under_a_rig_wide_ceiling():
    """Finding 4: an attacker's wrong MACs on one connection do not keep the clinician out on
    the next: the back-off is per connection, under a short rig-wide ceiling."""
    srv, app = _server()
    attacker = Talk(srv)
    for _ in range(3):
        assert attacker.login("clinician", TEST_KEY).body["code"] == proto.AUTH_FAILED
        attacker.now_ms = srv.auth_until_ms
    assert srv.auth_until_ms - attacker.now_ms == 0 and srv.auth_failures == 3
    attacker.login("clinician", TEST_KEY)  # a 4th: this connection now waits 8 s
    srv.end(True)  # the attacker's program closes the port
    clin = Talk(srv)
    clin.now_ms = attacker.now_ms  # right away
    assert clin.login("clinician", CLIN_KEY).body == {"role": "clinician"}
    # one wrong MAC a minute, each from a new connection, for an hour: never in the way
    t = clin.now_ms
    for i in range(60):
        t += 60000
        srv.end(True)
        a = Talk(srv)
        a.now_ms = t
        assert a.login("clinician", TEST_KEY).body["code"] == proto.AUTH_FAILED
        srv.end(True)
        c = Talk(srv)
        c.now_ms = t + 1
        assert c.login("clinician", CLIN_KEY).name == "ok", i
    # a burst across connections hits the ceiling: 10 failures, then one per 6 s
    t += 60000
    refused = 0
    for _ in range(12):
        srv.end(True)
        a = Talk(srv)
        a.now_ms = t
        code = a.login("clinician", TEST_KEY).body["code"]
        refused += code == proto.THROTTLED
    assert refused == 2
    srv.end(True)
    c = Talk(srv)
    c.now_ms = t + auth.GLOBAL_STEP_MS - 1
    assert c.login("clinician", CLIN_KEY).body["code"] == proto.THROTTLED
    c.now_ms = t + auth.GLOBAL_STEP_MS  # at most 6 s after the burst, a minute at worst
    assert c.login("clinician", CLIN_KEY).name == "ok"


def test_global_ceiling_numbers():
    until = 0
    for _ in range(auth.GLOBAL_FAILS):
        assert auth.global_wait_ms(until, 0) == 0
        until = auth.global_after_fail(until, 0)
    assert auth.global_wait_ms(until, 0) == auth.GLOBAL_STEP_MS
    assert auth.global_wait_ms(until, auth.GLOBAL_STEP_MS) == 0
    assert until == 60000  # empty a minute after the last failure


def test_audit_events():
    """Finding 7: logins that succeed or fail (role, never a secret) and every clinician
    command (name, role) reach the event log."""
    srv, app = _server()
    t = Talk(srv)
    t.login("clinician", TEST_KEY)
    t.now_ms += 1000
    t.login("patient", CLIN_KEY)  # within the minute: counted, not logged
    t.now_ms += 2000
    t.login("clinician", CLIN_KEY)
    t.req("status")
    t.req("alarm.test")
    t.req("plan.set", {"plan": {}})
    assert app.events == [
        ("auth.fail", {"role": "clinician", "reason": "wrong key", "failures": 1}),
        ("auth.ok", {"role": "clinician", "failures": 1}),
        ("cmd", {"cmd": "alarm.test", "role": "clinician", "code": None}),
        ("cmd", {"cmd": "plan.set", "role": "clinician", "code": None}),
    ]
    for _, data in app.events:
        assert TEST_KEY not in repr(data) and CLIN_KEY not in repr(data)
    t.now_ms += 61000
    srv.end(True)
    t.login("patient", CLIN_KEY)
    assert app.events[-1] == ("auth.fail", {"role": "patient", "reason": "wrong key",
                                            "failures": 1})


def test_a_login_at_every_poll_does_not_push_the_log_out():
    """Finding (first-hour pass): `pumprig monitor` logs in at every poll; each login was an
    auth.ok event, and in about 200 s of polling they pushed every other event (alarms
    among them) out of the 200-event log. A role's logins within 10 min of its last logged
    one are counted and logged with its next auth.ok; another role's login and a login after
    failures are logged at once."""
    srv, app = _server()
    t = Talk(srv)
    for _ in range(300):  # a monitor polling once a second for 5 minutes
        assert t.login("patient", TEST_KEY).name == "ok"
        srv.end(True)
        t.now_ms += 1000
    assert app.events == [("auth.ok", {"role": "patient"})]
    t.login("clinician", TEST_KEY)  # the patient's key: wrong: logged (the first failure)
    t.now_ms = srv.auth_until_ms  # the back-off after the failure
    assert t.login("clinician", CLIN_KEY).name == "ok"  # another role: logged at once
    assert app.events[-1] == ("auth.ok", {"role": "clinician"})
    srv.end(True)
    t.login("clinician", TEST_KEY)  # within the minute: counted, not logged
    t.now_ms = srv.auth_until_ms
    assert t.login("clinician", CLIN_KEY).name == "ok"  # unlogged failures: logged at once
    assert app.events[-1] == ("auth.ok", {"role": "clinician", "failures": 1})
    srv.end(True)
    t.now_ms += session.AUDIT_OK_MS
    t.login("patient", TEST_KEY)  # 10 min after the first: logged, with the count
    assert app.events[-1] == ("auth.ok", {"role": "patient", "logins": 300})
    assert len(app.events) == 5


def test_back_off_of_a_quiet_line_decays_where_the_link_is_not_seen():
    """Finding 4 on boards without link sensing: a connection is what lies between quiet
    spells, so a back-off ends once the line has been quiet (no attempt) for the idle time."""
    srv, app = _server()
    srv.idle_ms = 300000
    t = Talk(srv)
    for _ in range(6):
        t.login("clinician", TEST_KEY)
        t.now_ms = srv.auth_until_ms
    assert srv.auth_failures == 6 and srv.auth_until_ms - t.now_ms == 0
    t.login("clinician", TEST_KEY)  # the 7th: 60 s
    t.now_ms += 60000
    assert srv.auth_failures == 7
    t.now_ms += 240000  # 300 s since the last failure
    assert t.login("clinician", TEST_KEY).body["code"] == proto.AUTH_FAILED
    assert srv.auth_failures == 1  # started again from the first delay


# ------------------------------------- the resident `status` fast path (Server._dispatch)


def _status_calls(app):
    return [c for c in app.calls if c[0] == "status"]


def test_status_fast_path_needs_a_live_signed_session():
    """`status` without arguments is answered without the command dictionary for a patient or
    clinician session. Attacked: no login, a signature with no session behind it, a second
    program's plain frame beside a live session, after the connection closed, after the idle
    time, after a new hello, after a failed auth, and an exact retry of an answered frame once
    the session ended. Each gets AUTH_REQUIRED and never reaches the app."""
    srv, app = _server()
    t = Talk(srv)
    assert t.req("status").body["code"] == proto.AUTH_REQUIRED  # no login, plain frame
    forged = ClientSession()
    forged.pad = auth.pads(b"\x00" * 32)  # signed, with no session on the board
    assert t.send(forged.line("f1", "status", {}, seq=1), "f1").body["code"] == \
        proto.AUTH_REQUIRED
    assert _status_calls(app) == []

    t.login("patient", TEST_KEY)
    assert t.req("status", rid="ok1").name == "ok"
    answered = t.last
    assert _status_calls(app) == [("status", "patient", "ok1")]
    other = Talk(srv)  # a second program on the same line, without the key
    other.n = 100
    assert other.req("status").body["code"] == proto.AUTH_REQUIRED
    # the retry record answers a retry of the same frame while the session lives (the answer
    # already went over the line), and runs nothing
    assert other.send(answered, "ok1").name == "ok" and len(_status_calls(app)) == 1

    srv.end(True)  # the host closed the port
    assert t.req("status").body["code"] == proto.AUTH_REQUIRED
    assert other.send(answered, "ok1").body["code"] == proto.AUTH_REQUIRED  # record gone
    assert len(_status_calls(app)) == 1

    srv.idle_ms = 300000  # a board that cannot see the link: the idle time
    t.login("clinician", CLIN_KEY)
    t.now_ms += 300001
    assert t.req("status").body["code"] == proto.AUTH_REQUIRED
    assert srv.sess is None and srv.role == proto.ROLE_NONE

    t.login("clinician", CLIN_KEY)
    assert t.req("status").name == "ok" and len(_status_calls(app)) == 2
    signer = t.cs.pad
    other.req("hello")  # anyone may say hello: it ends the session
    t.cs.pad = signer
    assert t.req("status").body["code"] == proto.AUTH_REQUIRED

    t.login("clinician", CLIN_KEY)
    signer = t.cs.pad
    t.login("clinician", TEST_KEY)  # a failed auth ends the session too
    t.cs.pad = signer
    assert t.req("status").body["code"] == proto.AUTH_REQUIRED
    assert len(_status_calls(app)) == 2


def test_status_fast_path_refuses_arguments_a_bad_mac_and_a_replay():
    """Within a live session: `status` with arguments goes through the command check
    (BAD_ARGS), a wrong MAC and a used sequence number are refused before anything runs, a
    body that is not an object is a bad frame; none of them uses up a sequence number or ends
    the session."""
    from binascii import crc32

    srv, app = _server()
    t = Talk(srv)
    t.login("patient", TEST_KEY)
    for args in ({"x": 1}, {"since": 0}, {"x" * 300: 1}):
        f = t.req("status", args)
        assert f.body["code"] == proto.BAD_ARGS, (args, f.body)
        assert len(f.body["message"]) <= proto.MAX_MESSAGE
    assert _status_calls(app) == []
    line = t.cs.line("m1", "status", {})
    mac = line[-42:-10]
    bad = mac[:-1] + (b"0" if mac[-1:] != b"0" else b"1")
    body = line[:-42] + bad
    f = t.send(body + b"*%08x\n" % (crc32(body) & 0xFFFFFFFF), "m1")
    assert f.body["code"] == proto.BAD_MAC
    seq = t.cs.seq
    assert t.send(t.cs.line("m2", "status", {}, seq=seq), "m2").name == "ok"  # not used up
    assert t.send(t.cs.line("m3", "status", {}, seq=seq), "m3").body["code"] == proto.REPLAY
    assert t.send(t.cs.line("m4", "status", {}, seq=seq - 1), "m4").body["code"] == \
        proto.REPLAY
    for js in (b"[]", b"null", b"0"):
        head = b"@j1 status %s|%d|" % (js, seq + 1)
        b = head + auth.request_mac(t.cs.pad, head)
        f = t.send(b + b"*%08x\n" % (crc32(b) & 0xFFFFFFFF), "j1")
        assert f.body["code"] == proto.BAD_FRAME, (js, f.body)
    assert _status_calls(app) == [("status", "patient", "m2")]
    t.cs.seq = seq + 1
    assert t.req("status").name == "ok" and srv.role == proto.ROLE_PATIENT


def test_the_retry_record_ends_with_an_expired_session():
    """Where the board cannot see the link, a session ends after the idle time, and with it
    its record of ids (docs/protocol.md): an exact replay of an answered frame after that gets
    AUTH_REQUIRED, not the recorded answer (before: the record still answered until the next
    signed request ended the session)."""
    srv, app = _server()
    srv.idle_ms = 300000
    t = Talk(srv)
    t.login("patient", TEST_KEY)
    assert t.req("status", rid="s1").name == "ok"
    answered = t.last
    t.now_ms += 1000
    assert t.send(answered, "s1").name == "ok"  # a retry within the session: recorded answer
    t.now_ms += 300001
    f = t.send(answered, "s1")
    assert f.name == "err" and f.body["code"] == proto.AUTH_REQUIRED, f.body
    assert srv.sess is None and srv.cache == [] and len(_status_calls(app)) == 1
