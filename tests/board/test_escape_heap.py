"""\\u escapes in a request decode to the right characters without keeping heap for good.

Found 2026-12-05: the decoder made each escaped character with chr(), and MicroPython interns
the one-character string chr() returns (a qstr, never freed). A client sending distinct escapes
(the arguments are decoded before the role is checked: no login needed) took about 16 bytes a
request until the heap ran out and the board reset; 2,000 requests took 31 KB. Runs under
CPython and MicroPython; the heap check is MicroPython's (CPython frees such strings).
"""

import gc
import sys
from binascii import crc32

from pumpcore import proto

MPY = sys.implementation.name == "micropython"


def _line(body):
    head = b"@a1 hello " + body
    return head + b"*%08x\n" % (crc32(head) & 0xFFFFFFFF)


def test_escapes_decode_to_their_characters():
    for v in (0x20, 0x41, 0x7E, 0x7F, 0x80, 0xE9, 0x100, 0x7FF, 0x800, 0x4E2D, 0xD7FF, 0xE000,
              0xFFFF):
        f = proto.decode(_line(b'{"x":"a\\u%04xb"}' % v))
        assert f.error is None, (hex(v), f.error)
        s = f.body["x"]
        assert len(s) == 3 and s[0] == "a" and s[2] == "b", hex(v)
        assert ord(s[1]) == v, (hex(v), hex(ord(s[1])))


def test_distinct_escapes_keep_no_heap():
    lines = [_line(b'{"x":"\\u%04x"}' % (0x100 + i)) for i in range(2000)]
    proto.decode(lines[0])  # the decoder's module loaded, first-use allocations made
    gc.collect()
    before = gc.mem_free() if MPY else 0
    for ln in lines:
        f = proto.decode(ln)
        assert f.error is None
    assert ord(f.body["x"]) == 0x100 + 1999
    f = None
    gc.collect()
    if MPY:
        lost = before - gc.mem_free()
        # 31 KB with chr(); a few hundred bytes of the collector's own bookkeeping now
        assert lost < 2048, "%d bytes kept after 2,000 distinct escapes" % lost
