"""Canonical JSON and CRC32: the same bytes on CPython, the unix port and the boards.

MicroPython dicts do not keep insertion order and its json module has no sort_keys, so records
and plan CRCs use this encoder: keys sorted, no spaces, ASCII only, integers only (no floats:
boards have 32-bit floats and would not agree with the host).
"""

from binascii import crc32


class CanonError(ValueError):
    pass


def _str(s, out):
    out.append('"')
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


def _enc(v, out, depth):
    if depth > 8:
        raise CanonError("nested too deeply")
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, str):
        _str(v, out)
    elif isinstance(v, (list, tuple)):
        out.append("[")
        first = True
        for x in v:
            if not first:
                out.append(",")
            first = False
            _enc(x, out, depth + 1)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for k in sorted(v):
            if not isinstance(k, str):
                raise CanonError("object keys must be strings")
            if not first:
                out.append(",")
            first = False
            _str(k, out)
            out.append(":")
            _enc(v[k], out, depth + 1)
        out.append("}")
    else:
        raise CanonError("cannot encode %s" % type(v).__name__)


def dumps(v):
    """Canonical JSON text of v (str)."""
    out = []
    _enc(v, out, 0)
    return "".join(out)


def crc_of(data):
    """CRC32 (IEEE 802.3, as zlib) of bytes, as an unsigned int."""
    return crc32(data) & 0xFFFFFFFF


def crc_hex(data):
    return "%08x" % crc_of(data)


def digest(v):
    """CRC32 of the canonical encoding of v, as 8 lowercase hex digits."""
    return crc_hex(dumps(v).encode())
