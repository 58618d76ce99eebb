"""Helpers for board tests that run under pytest (CPython) and tests/mpy_runner.py."""

import os

try:
    import tempfile
except ImportError:  # MicroPython has no tempfile
    tempfile = None


try:  # pytest treats unittest.SkipTest as a skip
    from unittest import SkipTest as _SkipBase
except ImportError:  # MicroPython
    _SkipBase = Exception


class SkipTest(_SkipBase):
    """Raise SkipTest(reason) to skip a test under pytest and under tests/mpy_runner.py."""


def raises(exc_type, fn, *args, **kw):
    """Call fn(*args, **kw); assert it raises exc_type and return the exception."""
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))


def take_output(srv):
    """The frames a Server queued since the last call, as bytes: what the App hands the serial
    line with Server.write_output."""
    out = []
    srv.write_output(out.append)
    return b"".join(out)


_counter = [0]


def tmpdir():
    """A fresh, empty directory (absolute path, no trailing slash)."""
    if tempfile is not None:
        return tempfile.mkdtemp(prefix="pumprig-test-")
    while True:
        _counter[0] += 1
        tag = "".join("%02x" % b for b in os.urandom(4))
        path = "/tmp/pumprig-test-%d-%s" % (_counter[0], tag)
        try:
            os.mkdir(path)
            return path
        except OSError:
            pass  # exists: try another name


def rmtree(path):
    """Remove a directory tree made by tmpdir() (best effort, no os.path needed)."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        try:
            os.remove(p)
        except OSError:
            rmtree(p)
    try:
        os.rmdir(path)
    except OSError:
        pass


def read_bytes(path):
    f = open(path, "rb")
    try:
        return f.read()
    finally:
        f.close()


def write_bytes(path, data):
    f = open(path, "wb")
    try:
        f.write(data)
    finally:
        f.close()


def forget_module(name):
    """Unload a module ("pumpcore.evlog"), as on a board at power-on where it is not resident:
    out of sys.modules and off its package."""
    import sys

    sys.modules.pop(name, None)
    dot = name.rfind(".")
    pkg = sys.modules.get(name[:dot]) if dot > 0 else None
    if pkg is not None and hasattr(pkg, name[dot + 1 :]):
        delattr(pkg, name[dot + 1 :])


class ClientSession:
    """The host's side of a session, for tests that talk to a Server: the `auth` arguments
    for a hello's nonce, then request lines signed with the session key and the next sequence
    number (docs/protocol.md). pumpcore.auth is imported for each call, not kept."""

    def __init__(self, cnonce="abcdef0123456789abcdef0123456789"):
        self.cnonce = cnonce
        self.pad = None
        self.seq = 0
        self._next = None

    def auth_args(self, key, hello, role):
        from pumpcore import auth

        nonce, uid = hello["nonce"], hello["uid"]
        self._next = auth.pads(auth.session_key(key, nonce, self.cnonce, role, uid))
        return {"role": role, "mac": auth.mac_hex(key, nonce, role, uid, self.cnonce),
                "cnonce": self.cnonce}

    def logged_in(self):
        self.pad, self.seq, self._next = self._next, 0, None

    def line(self, rid, cmd, args=None, seq=None):
        from pumpcore import auth, proto

        if cmd == "hello":
            self.pad = None
        if self.pad is None:
            return proto.encode_request(rid, cmd, args)
        if seq is None:
            self.seq += 1
            seq = self.seq
        return auth.sign_request(self.pad, rid, cmd, args, seq)


def answers(app, line, now_ms=None):
    """Put one request line on app's board serial, run one App.step (as main.py's loop does)
    and return the answer frames ("=") written back."""
    from pumpcore import proto

    b = app.board
    if now_ms is not None:
        b.t_ms = now_ms
    b.rx = line
    app.step(b.t_ms)
    out, b.tx = b.tx, b""
    return [proto.decode(x + b"\n") for x in out.split(b"\n") if x.startswith(b"=")]


def login(app, key_hex, role="clinician", now_ms=None):
    """Log in to app's Server with hello and auth frames through its board's serial line;
    returns the ClientSession whose line() signs the next requests (the App must hold key_hex
    for that role)."""
    cs = ClientSession()
    hello = answers(app, cs.line("lh", "hello", {}), now_ms)
    assert len(hello) == 1 and hello[0].name == "ok", hello
    auth = answers(app, cs.line("la", "auth", cs.auth_args(key_hex, hello[0].body, role)),
                   now_ms)
    assert len(auth) == 1 and auth[0].name == "ok" and auth[0].body["role"] == role, auth
    cs.logged_in()
    return cs
