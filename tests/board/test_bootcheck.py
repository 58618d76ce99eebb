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
