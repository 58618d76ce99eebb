"""Canonical JSON and CRC32: the same bytes on CPython, the unix port and the boards.

MicroPython dicts do not keep insertion order and its json module has no sort_keys, so records
and plan CRCs use this encoder: keys sorted, no spaces, ASCII only, integers only (no floats:
boards have 32-bit floats and would not agree with the host).
"""

import json
from binascii import crc32

from pumpcore import const

_CHUNK = const(128)  # characters encoded at a time by write()


class CanonError(ValueError):
    pass


def _str(s):
    for ch in s:
        o = ord(ch)
        if o < 0x20 or o > 0x7E or ch == '"' or ch == "\\":
            break
    else:
        return '"' + s + '"'  # the common case: no escaping, one allocation
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif o < 0x20 or o > 0x7E:
            if o > 0xFFFF:
                raise CanonError("character outside the BMP")
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _scalar(v):
    """The canonical text of a value that is not a list, tuple or dict."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _str(v)
    raise CanonError("cannot encode %s" % type(v).__name__)


def dumps(v):
    """Canonical JSON text of v (str)."""
    pieces = []
    emit(v, pieces.append)
    return "".join(pieces)


def emit(v, out, depth=0):
    """The canonical text of v handed to out(str) in pieces: a key, a scalar or a bracket at a
    time, so no temporary is the size of the whole."""
    if depth > 8:
        raise CanonError("nested too deeply")
    if isinstance(v, (list, tuple)):
        out("[")
        sep = ""
        i = 0
        n = len(v)
        while i < n:
            x = v[i]
            if type(x) is int:
                # a run of integers (the dose limiter's rings): up to 8 in one piece
                j = i + 1
                while j < n and j - i < 8 and type(v[j]) is int:
                    j += 1
                out(sep + ",".join([str(y) for y in v[i:j]]))
                i = j
            else:
                if sep:
                    out(sep)
                emit(x, out, depth + 1)
                i += 1
            sep = ","
        out("]")
    elif isinstance(v, dict):
        out("{")
        first = True
        for k in sorted(v):
            if not isinstance(k, str):
                raise CanonError("object keys must be strings")
            out(_str(k) + ":" if first else "," + _str(k) + ":")
            first = False
            emit(v[k], out, depth + 1)
        out("}")
    else:
        out(_scalar(v))


def crc_of(data):
    """CRC32 (IEEE 802.3, as zlib) of bytes, as an unsigned int."""
    return crc32(data) & 0xFFFFFFFF


def crc_hex(data):
    return "%08x" % crc_of(data)


def write(v, sink, head=""):
    """Hand `head` and the canonical text of v to sink(bytes) in chunks of about _CHUNK bytes
    (nothing the size of the whole is built: a fragmented board heap may not have the block);
    returns the CRC32 of all the bytes handed out."""
    st = [[head], len(head), 0]  # pending str pieces, their length, CRC so far

    def out(piece):
        p = st[0]
        p.append(piece)
        st[1] += len(piece)
        # also by count: a long list of small numbers (the dose limiter's rings) is one or two
        # characters a piece, and a list of 128 pieces is itself a kilobyte on a 64-bit port
        if st[1] >= _CHUNK or len(p) >= 24:
            _flush(st, sink)

    emit(v, out)
    _flush(st, sink)
    return st[2] & 0xFFFFFFFF


def _flush(st, sink):
    if st[1]:
        data = "".join(st[0]).encode()
        st[2] = crc32(data, st[2])
        sink(data)
    st[0] = []
    st[1] = 0


def _ignore(data):
    pass


def digest(v):
    """CRC32 of the canonical encoding of v, as 8 lowercase hex digits (computed chunk by
    chunk: the encoding is never built whole)."""
    return "%08x" % write(v, _ignore)


# ------------------------------------------------ record lines (pumpcore.store, pumpcore.evlog)


class StoreError(Exception):
    pass


class CorruptRecord(StoreError):
    def __init__(self, name, why="CRC mismatch"):
        super().__init__("corrupt record %s: %s" % (name, why))
        self.name = name
        self.why = why


def check_line(line, name):
    """Raise CorruptRecord unless line (bytes, with its newline) is exactly what encode()
    makes, up to the JSON: the form and the CRC."""
    n = len(line)
    if n < 11 or line[n - 1] != 0x0A or line[n - 10] != 0x2A:  # "\n", "*"
        raise CorruptRecord(name, "truncated or malformed")
    if line[n - 9 : n - 1] != crc_hex(line[: n - 10]).encode():
        raise CorruptRecord(name, "CRC mismatch")


def decode(line, name="record"):
    """The object in one record line (bytes, with its newline); CorruptRecord if the line is
    not exactly what pumpcore.store.encode() makes."""
    check_line(line, name)
    try:
        return json.loads(line[: len(line) - 10].decode())
    except (ValueError, UnicodeError) as e:
        raise CorruptRecord(name, "unparseable: %s" % (e,)) from None
