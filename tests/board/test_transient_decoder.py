"""The strict frame and JSON decoder lives in pumpcore.parse, imported for the call (memory
work after the integrity, records and plan-rule merges: the flashed firmware no longer ran 30
days and a restart in 128 KB). Resident pumpcore.proto keeps the command dictionary, Frame and
the encoders; on a board the decoder is dropped after the request (App._shed) and before a
command's own code loads (App._overlay). Runs under CPython and MicroPython.
"""

import sys

from _util import forget_module, login, rmtree, tmpdir
from fakeboard import FakeBoard
from pumpcore import app as appmod
from pumpcore import loader, parse, proto

MPY = sys.implementation.name == "micropython"


def test_proto_keeps_no_decoder_code():
    """Fails on the old proto, which held the whole decoder (about 8 KB of a board heap)."""
    for name in ("_parse_value", "_parse_str", "_decode", "_JsonError", "_ESC"):
        assert not hasattr(proto, name), name


def test_the_decoder_limits_are_protos():
    assert parse.MAX_LINE == proto.MAX_LINE and parse.MAX_ID == proto.MAX_ID
    assert parse.MAX_NAME == proto.MAX_NAME and parse.MAX_DEPTH == proto.MAX_DEPTH
    assert parse.MAX_INT_DIGITS == proto.MAX_INT_DIGITS and parse.MAC_HEX == proto.MAC_HEX
    assert (parse.BAD_FRAME, parse.BAD_CRC, parse.TOO_LONG) == (
        proto.BAD_FRAME, proto.BAD_CRC, proto.TOO_LONG)


def test_decoder_errors_still_come_back_as_frames():
    f = proto.decode(b'@a1 status {"x":01}*00000000\n')
    assert f.error == proto.BAD_CRC and f.id == "a1"
    line = b'@a1 status {"x":01}'
    f = proto.decode(line + b"*%08x" % (__import__("binascii").crc32(line) & 0xFFFFFFFF))
    assert f.error == proto.BAD_FRAME and "leading zero" in f.message
    assert proto.read_id(b"@abc status") == "abc" and proto.valid_id("a-1")


def test_the_decoder_leaves_after_a_request():
    old = loader.DROP_SOURCE
    loader.DROP_SOURCE = True
    root = tmpdir()
    try:
        if MPY:
            # as on a board at power-on: no per-call module loaded (earlier test files leave
            # theirs; the app's drop counts modules from its boot)
            for name in [m for m in sys.modules if m.startswith("pumpcore.")]:
                if not loader.resident(name):
                    forget_module(name)
        b = FakeBoard(root=root + "/")
        app = appmod.App(b, keys={"clinician": "11" * 32})
        cs = login(app, "11" * 32, now_ms=1000)
        b.rx = cs.line("q1", "clock.get", {})  # signed, in the session
        app.step(1000)
        if MPY:
            assert "pumpcore.parse" not in sys.modules
        outs = [proto.decode(x) for x in b.tx.split(b"\n") if x.startswith(b"=q1 ")]
        assert len(outs) == 1 and outs[0].error is None and outs[0].name == "ok", b.tx
    finally:
        loader.DROP_SOURCE = old
        rmtree(root)
