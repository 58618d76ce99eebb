"""HMAC, the challenge, throttling and the server's role handling (CPython and MicroPython)."""

from binascii import hexlify

from _util import raises
from pumpcore import auth, proto, server

# The documented test key (docs/protocol.md): never a real pump's key.
TEST_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
CLIN_KEY = "c1" * 32
NONCE = "00112233445566778899aabbccddeeff"


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
    msg = auth.challenge(NONCE, "clinician", "e6614103e7452d2f")
    assert msg == b"00112233445566778899aabbccddeeff:clinician:e6614103e7452d2f"
    mac = auth.mac_hex(TEST_KEY, NONCE, "clinician", "e6614103e7452d2f")
    assert mac == "83cef0eaf8546a3f2933cef0f4b80621eba48492e591c8d9999de7c2581d9359"
    assert auth.verify(TEST_KEY, NONCE, "clinician", "e6614103e7452d2f", mac)
    assert auth.verify(TEST_KEY, NONCE, "clinician", "e6614103e7452d2f", mac.upper())
    assert not auth.verify(TEST_KEY, NONCE, "patient", "e6614103e7452d2f", mac)
    assert not auth.verify(TEST_KEY, NONCE, "clinician", "other", mac)
    assert not auth.verify(TEST_KEY, NONCE, "clinician", "e6614103e7452d2f", mac[:-1] + "0")
    assert not auth.verify(TEST_KEY, NONCE, "clinician", "e6614103e7452d2f", None)
    line = proto.encode_request("h1a2b3c-2", "auth", {"role": "clinician", "mac": mac})
    assert line.endswith(b'"role":"clinician"}*1764a717\n')


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

    def raw(self, data):
        self.srv.feed(data, self.now_ms)
        out = self.srv.take_output()
        return [proto.decode(line) for line in out.split(b"\n") if line]

    def req(self, cmd, args=None, rid=None):
        if rid is None:
            self.n += 1
            rid = "t%d" % self.n
        frames = self.raw(proto.encode_request(rid, cmd, args))
        assert len(frames) == 1, frames
        f = frames[0]
        assert f.error is None and f.kind == "=" and f.id == rid
        return f

    def login(self, role, key):
        hello = self.req("hello").body
        mac = auth.mac_hex(key, hello["nonce"], role, hello["uid"])
        return self.req("auth", {"role": role, "mac": mac})


def test_hello():
    srv, app = _server()
    t = Talk(srv)
    b = t.req("hello").body
    assert b["protocol"] == 1 and b["uid"] == UID and b["plan_crc"] == "0badf00d"
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
    f = t.req("auth", {"role": "patient", "mac": "00" * 32})
    assert f.body["code"] == proto.AUTH_FAILED
    t.now_ms += 1000
    hello = t.req("hello").body
    mac = auth.mac_hex(TEST_KEY, hello["nonce"], "patient", UID)
    assert t.req("auth", {"role": "patient", "mac": mac}).name == "ok"
    # the same answer again (a replay, new id): the challenge is spent
    assert t.req("auth", {"role": "patient", "mac": mac}).body["code"] == proto.AUTH_FAILED
    assert t.req("auth", {"role": "root", "mac": mac}).body["code"] == proto.BAD_ARGS


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
    b = t.req("bolus", rid="b1")
    assert a.body == b.body == {"dose_ng": 100000, "n": 1}
    assert app.counter == 1
    f = t.req("status", rid="b1")
    assert f.body["code"] == proto.BAD_FRAME
    assert t.req("bolus", rid="b2").body["n"] == 2
    for i in range(3):
        t.req("status", rid="s%d" % i)
    assert t.req("bolus", rid="b2").body["n"] == 2  # still remembered after 3 others
    t.req("status", rid="s3")
    assert t.req("bolus", rid="b2").body["n"] == 3  # forgotten after 4 others


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
    assert fs[0].id == "r1" and fs[0].body["code"] == proto.BAD_FRAME
    assert app.calls == []
    # after the bad CRC, the same id with the right frame executes (errors are not cached)
    assert t.req("bolus", rid="q1").body["n"] == 1


def test_feed_in_pieces_and_bounded():
    srv, app = _server()
    line = proto.encode_request("p1", "hello", {})
    for i in range(len(line)):
        srv.feed(line[i : i + 1], 0)
    f = proto.decode(srv.take_output())
    assert f.id == "p1" and f.body["protocol"] == 1
    # a long run of bytes without a newline: the buffer stays bounded
    for _ in range(50):
        srv.feed(b"@z9 " + b"y" * 500, 0)
        assert len(srv._buf) <= proto.MAX_LINE
    srv.feed(b"\n" + proto.encode_request("p2", "hello", {}), 0)
    fs = [proto.decode(x) for x in srv.take_output().split(b"\n") if x]
    assert [(f.id, f.name) for f in fs] == [("z9", "err"), ("p2", "ok")]
    assert fs[0].body["code"] == proto.TOO_LONG


def test_events():
    srv, app = _server()
    assert srv.event("alarm.raised", {"kind": "LOW"}) == 1
    assert srv.event("refill", {}) == 2
    fs = [proto.decode(x) for x in srv.take_output().split(b"\n") if x]
    assert [(f.kind, f.id, f.name) for f in fs] == [("!", "1", "alarm.raised"), ("!", "2", "refill")]
    assert srv.take_output() == b""
    for _ in range(500):
        srv.event("alarm.raised", {"kind": "LOW"})
    assert len(srv.take_output()) <= 8192 and srv.dropped_events > 0
