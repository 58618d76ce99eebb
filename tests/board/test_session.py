"""The login (hello, auth) runs in pumpcore.session, imported for the call: under MicroPython a
precompiled session (.mpy; here the sources stand in for it, with app._DROP_SOURCE) and the
pumpcore.auth it imports leave sys.modules after the step, and logins, the throttle and its
survival across a reset work as before. CPython keeps the modules loaded.

Runs under CPython and MicroPython.
"""

import gc
import sys

from _util import forget_module, rmtree, tmpdir
from fakeboard import FakeBoard
from pumpcore import app as appmod
from pumpcore import loader, proto

KEYS = {"clinician": "11" * 32, "patient": "22" * 32}
WRONG = "33" * 32
LOGIN = ("pumpcore.session", "pumpcore.auth")
MPY = sys.implementation.name == "micropython"




def _loaded():
    return [m for m in LOGIN if m in sys.modules]


class Rig:
    def __init__(self, root, auth):
        self.auth = auth  # held here, not imported again: sys.modules shows what the app loads
        self.b = FakeBoard(root=root + "/")
        self.app = appmod.App(self.b, keys=KEYS)
        self.n = 0

    def frame(self, cmd, args, now):
        self.n += 1
        b = self.b
        b.rx = proto.encode_request("q%d" % self.n, cmd, args)
        b.t_ms = now
        self.app.step(now)  # through the board's serial, as main.py's loop does
        out, b.tx = b.tx, b""
        fs = [proto.decode(x + b"\n") for x in out.split(b"\n") if x.startswith(b"=")]
        assert len(fs) == 1, fs
        # the step is over: the login code is gone on MicroPython, kept on CPython
        assert ("pumpcore.session" in sys.modules) != MPY, cmd
        if MPY:
            assert _loaded() == [], _loaded()
        return fs[0]

    def login(self, key, now, role="clinician"):
        hello = self.frame("hello", {}, now)
        assert hello.name == "ok" and hello.body["protocol"] == proto.PROTOCOL_VERSION
        assert hello.body["limits"]["max_line"] == proto.MAX_LINE
        cnonce = "0123456789abcdef" * 2
        b = hello.body
        mac = self.auth.mac_hex(key, b["nonce"], role, b["uid"], cnonce)
        return self.frame("auth", {"role": role, "mac": mac, "cnonce": cnonce}, now)


def test_login_loads_for_the_call_and_leaves_the_heap():
    from pumpcore import auth  # the test's own copy, for the client's MAC

    old = loader.DROP_SOURCE
    loader.DROP_SOURCE = True
    for name in LOGIN:
        if MPY:
            forget_module(name)
    root = tmpdir()
    try:
        r = Rig(root, auth)
        srv = r.app.server
        if MPY:
            assert _loaded() == []  # the keys were converted at boot, then the code went
        assert srv.role == "none"
        f = r.login(KEYS["patient"], 1000, "patient")
        assert f.name == "ok" and f.body == {"role": "patient"} and srv.role == "patient"
        # again: the first load interned the modules' names for good (MicroPython's qstrs)
        gc.collect()
        before = gc.mem_alloc() if MPY else 0
        f = r.login(KEYS["clinician"], 1000)
        assert f.name == "ok" and f.body == {"role": "clinician"} and srv.role == "clinician"
        gc.collect()
        if MPY:
            # the code (session and auth, ~8 KB compiled from sources) is gone
            grown = gc.mem_alloc() - before
            assert grown < 1024, grown
        # a wrong key: refused, then throttled (without spending the nonce), 1 s then 2 s
        f = r.login(WRONG, 2000)
        assert f.name == "err" and f.body["code"] == proto.AUTH_FAILED and srv.role == "none"
        assert srv.auth_failures == 1 and srv.auth_until_ms == 3000
        f = r.login(KEYS["clinician"], 2999)
        assert f.body == {"code": proto.THROTTLED, "message": "too many failures: retry in 1 ms"}
        f = r.frame("auth", {"role": "root", "mac": "00" * 32, "cnonce": "00" * 16}, 2999)
        assert f.body["code"] == proto.BAD_ARGS  # the arguments are checked first
        assert r.login(WRONG, 3000, "patient").body["code"] == proto.AUTH_FAILED
        assert srv.auth_failures == 2 and srv.auth_until_ms == 5000
        assert r.login(KEYS["patient"], 4999, "patient").body["code"] == proto.THROTTLED
        # power cut: board time restarts; the right key right away is still refused
        r2 = Rig(root, auth)
        srv2 = r2.app.server
        assert srv2.auth_failures == 2 and srv2.auth_until_ms >= 1000
        assert r2.login(KEYS["clinician"], 0).body["code"] == proto.THROTTLED
        f = r2.login(KEYS["clinician"], srv2.auth_until_ms)
        assert f.name == "ok" and f.body == {"role": "clinician"}
        assert srv2.auth_failures == 0 and srv2.auth_until_ms == 0
        # patient: its own key works, the clinician's does not
        assert r2.login(KEYS["patient"], 9000, "patient").body == {"role": "patient"}
    finally:
        loader.DROP_SOURCE = old
        rmtree(root)
