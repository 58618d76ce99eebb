"""The boot check (board/bootcheck.py) and the FIRMWARE safe state's responder
(board/bootsafe.py), on CPython and MicroPython (issue 12, finding 5: a torn module was
imported and hung the board; now it is found before any import)."""

import os
import sys

try:
    import bootcheck
except ImportError:  # CPython under pytest: board/ is not a package on the path
    sys.path.insert(0, __file__.rsplit("/", 3)[0] + "/board")
    import bootcheck
from binascii import hexlify
from hashlib import sha256

import bootsafe
from _util import rmtree, tmpdir
from pumpcore import proto

M = ".pumprig-manifest.json"


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _fs(files):
    """A board filesystem with these files and their manifest; returns (dir, old cwd)."""
    d = tmpdir()
    os.mkdir(d + "/pumpcore")
    entries = []
    for p in sorted(files):
        _write(d + "/" + p, files[p])
        h = hexlify(sha256(files[p]).digest()).decode()
        entries.append('"%s":[%d,"%s"]' % (p, len(files[p]), h))
    _write(d + "/" + M, ('{"v":2,"hash":"sha256","files":{%s}}' % ",".join(entries)).encode())
    old = os.getcwd()
    os.chdir(d)
    return d, old


FILES = {"main.py": b"import bootcheck\n", "pumpcore/app.mpy": b"M\x06" + bytes(range(256)) * 3,
         "pumpcore/store.mpy": b"M\x06store"}


def _done(d, old):
    os.chdir(old)
    rmtree(d)


def test_an_intact_set_passes():
    d, old = _fs(FILES)
    try:
        assert bootcheck.check() == []
    finally:
        _done(d, old)


def test_a_torn_a_changed_or_a_missing_file_is_found():
    d, old = _fs(FILES)
    try:
        _write("pumpcore/app.mpy", FILES["pumpcore/app.mpy"][:100])      # torn
        assert bootcheck.check() == ["pumpcore/app.mpy"]
        data = bytearray(FILES["pumpcore/app.mpy"])
        data[500] ^= 1                                                    # same size, altered
        _write("pumpcore/app.mpy", bytes(data))
        assert bootcheck.check() == ["pumpcore/app.mpy"]
        _write("pumpcore/app.mpy", FILES["pumpcore/app.mpy"])
        os.remove("pumpcore/store.mpy")                                   # missing
        assert bootcheck.check() == ["pumpcore/store.mpy"]
    finally:
        _done(d, old)


def test_a_source_beside_a_listed_mpy_is_found():
    d, old = _fs(FILES)
    try:
        _write("pumpcore/app.py", b"x = 1\n")   # the import would take it instead of app.mpy
        assert bootcheck.check() == ["pumpcore/app.py"]
    finally:
        _done(d, old)
    files = dict(FILES)
    files["pumpcore/app.py"] = b"x = 1\n"       # listed too: it is what was installed
    d, old = _fs(files)
    try:
        assert bootcheck.check() == []
    finally:
        _done(d, old)


def test_no_manifest_or_a_torn_or_foreign_one_fails():
    d, old = _fs(FILES)
    try:
        with open(M, "rb") as f:
            good = f.read()
        for bad in (good[: len(good) // 2], b"", b"[1,2]", b'{"main.py": "ab"}',
                    b'{"files": {"main.py": 3}}', b"\xff\xfe"):
            _write(M, bad)
            got = bootcheck.check()
            assert got in ([M], ["main.py"]), (bad, got)
        os.remove(M)
        assert bootcheck.check() == [M]
    finally:
        _done(d, old)


INFO = {"firmware": "safe", "protocol": 1, "board": "sim", "uid": "ab", "nonce": "",
        "therapy": "safe", "safe_reason": "FIRMWARE", "mode": "none", "alarms": ["FIRMWARE"],
        "bad": ["pumpcore/app.mpy"], "logged": True, "motor": False}


def _ask(cmd, args=None, rid="h1-2"):
    line = proto.encode_request(rid, cmd, args)
    out = bootsafe.answer(bytes(line).rstrip(b"\n"), INFO)
    return None if out is None else proto.decode(out)


def test_the_safe_state_answers_hello_and_status_with_the_firmware_alarm():
    for cmd in ("hello", "status"):
        f = _ask(cmd)
        assert f.error is None and f.kind == "=" and f.id == "h1-2" and f.name == "ok"
        assert f.body == INFO


def test_the_safe_state_refuses_everything_else():
    f = _ask("auth", {"role": "clinician", "mac": "00"})
    assert f.name == "err" and f.body["code"] == "SAFE_STATE"
    assert "pumpcore/app.mpy" in f.body["message"] and "pumprig flash" in f.body["message"]
    assert _ask("therapy.resume").body["code"] == "SAFE_STATE"
    assert _ask("maintenance").body == {"repl": True}


def test_the_safe_state_ignores_what_is_not_a_valid_request():
    line = bytes(proto.encode_request("h1-3", "status", None)).rstrip(b"\n")
    wrong = b"1" if line[-1:] == b"0" else b"0"
    assert bootsafe.answer(line[:-1] + wrong, INFO) is None     # CRC mismatch
    assert bootsafe.answer(b"=h1 ok {}*00000000", INFO) is None
    assert bootsafe.answer(b"garbage", INFO) is None
    assert bootsafe.answer(b"@" + b"x" * 2000, INFO) is None
    long_id = bytes(proto.encode_request("a" * 24, "status", None)).rstrip(b"\n")
    assert bootsafe.answer(long_id, INFO) is not None
    body = b"@" + b"a" * 25 + b" status {}"
    from binascii import crc32

    assert bootsafe.answer(body + b"*%08x" % (crc32(body) & 0xFFFFFFFF), INFO) is None


def test_odd_paths_are_quoted_as_printable_ascii():
    info = dict(INFO)
    info["bad"] = ['pump"core/\\x\u00e9.mpy']
    out = bootsafe.answer(bytes(proto.encode_request("h1", "status", None)).rstrip(b"\n"), info)
    f = proto.decode(out)
    assert f.error is None and f.body["bad"] == ["pump?core/?x?.mpy"]


# ---- the boot-loop guard before the app exists (bootsafe.failed, main.py)

_LOGMODS = ("__init__", "canon", "store", "events", "evlog", "proto", "logpages", "fault")


class _Reset(BaseException):
    """The board's reset: ends bootsafe.failed, as a real reset does."""


def _pumpcore_modules():
    """bootsafe drops pumpcore from sys.modules (its heap is for the safe state): the test
    puts back the modules every other test holds."""
    return {k: v for k, v in sys.modules.items() if k.startswith("pumpcore")}


def _guard_fs():
    files = {"main.py": b"x"}
    for n in _LOGMODS:
        files["pumpcore/%s.py" % n] = b"x"  # listed as intact: the store and the log open
    return _fs(files)


def _boom():
    raise KeyError("tx")


def _raised():
    try:
        _boom()
    except KeyError as e:
        return e


def test_a_boot_failure_is_counted_logged_and_reset_then_the_guard_holds():
    from fakeboard import FakeBoard
    from pumpcore import fault
    from pumpcore.store import Store

    saved = _pumpcore_modules()
    d, old = _guard_fs()
    try:
        b = FakeBoard()
        enabled = []
        b.motor_enable = enabled.append

        def reset():
            b.resets += 1
            raise _Reset()

        b.reset = reset
        for n in (1, 2):
            b.t_ms = 40 * n
            try:
                bootsafe.failed(_raised(), b)
                raise AssertionError("no reset")
            except _Reset:
                pass
            assert b.resets == n and enabled == [False] * n
            sys.modules.update(saved)
            c = fault.crashes(Store())
            assert len(c) == n and c[-1] == [None, 40 * n]
        # the third within minutes: the guard holds (no reset; the safe state follows)
        info, reason = bootsafe._count(ValueError("x"), None, 5)
        sys.modules.update(saved)
        assert reason == "boot loop: 3 crashes within 10 min" and info["crashes"] == 3
        assert info["type"] == "ValueError"
        bootsafe._pages = True
        try:
            f = _ask("log", {"since": 0, "limit": 50})
        finally:
            bootsafe._pages = False
            sys.modules.update(saved)
        assert f.error is None and f.name == "ok", f.body
        ev = [e for e in f.body["events"] if e["kind"] == "fault"]
        assert [e["data"]["type"] for e in ev] == ["KeyError", "KeyError"]
        assert [e["data"]["crashes"] for e in ev] == [1, 2] and [e["ms"] for e in ev] == [40, 80]
        assert ev[0]["data"]["where"].endswith(" _boom"), ev[0]  # the place it was raised
    finally:
        sys.modules.update(saved)
        _done(d, old)


def test_a_crash_that_cannot_be_counted_holds_at_once():
    """A boot that fails and cannot count its failures (the store unwritable) must not loop:
    the guard holds at the first."""
    saved = _pumpcore_modules()
    d, old = _guard_fs()
    try:
        _write("data", b"a file where the store's directory goes")
        info, reason = bootsafe._count(KeyError("tx"), None, 5)
        assert reason is not None and reason.startswith("boot loop"), reason
        assert info["type"] == "KeyError"
    finally:
        sys.modules.update(saved)
        _done(d, old)


GUARD_INFO = dict(INFO, safe_reason="boot loop: 3 crashes within 10 min", alarms=["FAULT"],
                  bad=[], fault={"type": "KeyError", "where": "hw/setup.py:83 build_parts",
                                 "text": "tx", "crashes": 3})


def _ask_guard(cmd, args=None):
    line = proto.encode_request("g1", cmd, args)
    return proto.decode(bootsafe.answer(bytes(line).rstrip(b"\n"), GUARD_INFO))


def test_the_boot_loop_state_answers_status_and_refuses_with_the_fault():
    f = _ask_guard("status")
    assert f.name == "ok" and f.body == GUARD_INFO
    for cmd in ("auth", "therapy.stop", "plan.set", "ack"):
        f = _ask_guard(cmd)
        assert f.name == "err" and f.body["code"] == "SAFE_STATE", (cmd, f.body)
        m = f.body["message"]
        assert m.startswith("boot loop") and "KeyError at hw/setup.py:83" in m, m
        assert "pumprig flash" in m and len(m) <= proto.MAX_MESSAGE
    # the log's modules did not pass the check (here: none loaded): refused, never read
    assert _ask_guard("log").body["code"] == "SAFE_STATE"


def test_the_log_answer_checks_its_arguments():
    saved = _pumpcore_modules()
    d, old = _guard_fs()
    bootsafe._pages = True
    try:
        for args in ({"since": -1}, {"limit": 0}, {"limit": 51}, {"since": "0"},
                     {"since": True}, {"x": 1}, {"since": 2**40}):
            f = _ask_guard("log", args)
            assert f.name == "err" and f.body["code"] == "BAD_ARGS", (args, f.body)
        f = _ask_guard("log", {"limit": 5})
        assert f.name == "ok" and f.body == {"events": [], "next": 1}, f.body
    finally:
        bootsafe._pages = False
        sys.modules.update(saved)
        _done(d, old)
