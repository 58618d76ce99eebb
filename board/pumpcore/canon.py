"""Canonical JSON and CRC32: the same bytes on CPython, the unix port and the boards.

MicroPython dicts do not keep insertion order and its json module has no sort_keys, so records
and plan CRCs use this encoder: keys sorted, no spaces, ASCII only, integers only (no floats:
boards have 32-bit floats and would not agree with the host).
"""

from binascii import crc32


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


def _enc(v, depth):
    """The canonical text of v. Builds each container from its members' texts, so the
    largest temporary is about the size of the result (a board heap has no room for a list
    of one entry per character)."""
    if depth > 8:
        raise CanonError("nested too deeply")
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
    if isinstance(v, (list, tuple)):
        return "[" + ",".join([_enc(x, depth + 1) for x in v]) + "]"
    if isinstance(v, dict):
        parts = []
        for k in sorted(v):
            if not isinstance(k, str):
                raise CanonError("object keys must be strings")
            parts.append(_str(k) + ":" + _enc(v[k], depth + 1))
        return "{" + ",".join(parts) + "}"
    raise CanonError("cannot encode %s" % type(v).__name__)


def dumps(v):
    """Canonical JSON text of v (str)."""
    return _enc(v, 0)


def emit(v, out, depth=0):
    """The canonical text of v (the same as dumps) handed to out(str) in pieces: a key, a
    scalar or a bracket at a time, so no temporary is the size of the whole."""
    if depth > 8:
        raise CanonError("nested too deeply")
    if isinstance(v, (list, tuple)):
        out("[")
        first = True
        for x in v:
            if not first:
                out(",")
            first = False
            emit(x, out, depth + 1)
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
        out(_enc(v, depth))


def crc_of(data):
    """CRC32 (IEEE 802.3, as zlib) of bytes, as an unsigned int."""
    return crc32(data) & 0xFFFFFFFF


def crc_hex(data):
    return "%08x" % crc_of(data)


def digest(v):
    """CRC32 of the canonical encoding of v, as 8 lowercase hex digits. Computed over the
    pieces emit() hands out: the encoding is never built whole."""
    st = [0]

    def out(piece):
        st[0] = crc32(piece.encode(), st[0])

    emit(v, out)
    return "%08x" % (st[0] & 0xFFFFFFFF)
