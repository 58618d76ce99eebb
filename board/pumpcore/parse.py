"""The strict frame and JSON decoder behind pumpcore.proto.decode (CPython and MicroPython).

Transient on a board (docs/architecture.md, Memory): proto imports it inside the functions that
decode, and App drops it before a command's own code loads. It imports nothing of pumpcore, so
proto stays its only user; the limits repeat proto's (tests/board/test_proto.py checks they
agree) and the error codes are proto's strings.
"""

import json
from binascii import crc32

from pumpcore import const

MAX_LINE = const(1024)  # proto.MAX_LINE
MAX_ID = const(24)  # proto.MAX_ID
MAX_NAME = const(32)  # proto.MAX_NAME
MAX_DEPTH = const(8)  # proto.MAX_DEPTH
MAX_INT_DIGITS = const(18)  # proto.MAX_INT_DIGITS
BAD_FRAME = "BAD_FRAME"
BAD_CRC = "BAD_CRC"
TOO_LONG = "TOO_LONG"
MAC_HEX = const(32)  # proto.MAC_HEX


def _f(kind, fid, name, body, error=None, message=None, crc=None, seq=None, mac_at=0):
    return (kind, fid, name, body, error, message, crc, seq, mac_at)


def _is_id_char(o):
    return 48 <= o <= 57 or 65 <= o <= 90 or 97 <= o <= 122 or o == 45 or o == 95


def _is_name_char(o):
    return 48 <= o <= 57 or 97 <= o <= 122 or o == 46 or o == 95


def _valid(s, max_len, is_char):
    if not isinstance(s, str) or not 1 <= len(s) <= max_len:
        return False
    for ch in s:
        if not is_char(ord(ch)):
            return False
    return True


def valid_id(s):
    return _valid(s, MAX_ID, _is_id_char)


def valid_name(s):
    return _valid(s, MAX_NAME, _is_name_char)


def _valid_seq(s):
    if not 1 <= len(s) <= 10:
        return False
    for ch in s:
        if not 48 <= ord(ch) <= 57:
            return False
    return True


def read_id(head):
    """The id from the start of a line (bytes or str), or None: used for error replies."""
    try:
        if len(head) < 2:
            return None
        first = head[0]
        if first != 64 and first != "@":
            return None
        i = 1
        n = len(head)
        while i < n and i <= MAX_ID + 1:
            o = head[i]
            if not isinstance(o, int):
                o = ord(o)
            if o == 32:
                break
            if not _is_id_char(o):
                return None
            i += 1
        if i == 1 or i > MAX_ID + 1 or i >= n:
            return None
        fid = head[1:i]
        if not isinstance(fid, str):
            fid = bytes(fid).decode()
        return fid
    except Exception:  # never raise from a decoder helper
        return None


# ------------------------------------------------------ strict JSON decoder
# Our own, not the json module: MicroPython's json accepts `[1,]` and `01` and floats, and
# both runtimes must agree on exactly which frames are valid.


class _JsonError(Exception):
    pass


_ESC = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _ws(s, i):
    n = len(s)
    while i < n and s[i] == " ":
        i += 1
    return i


def _parse_str(s, i):
    # s[i] == '"'
    i += 1
    out = None
    start = i
    n = len(s)
    while True:
        q = s.find('"', i)
        b = s.find("\\", i)
        if q < 0:
            raise _JsonError("unterminated string")
        if b < 0 or q < b:
            if out is None:
                return s[start:q], q + 1
            out.append(s[start:q])
            return "".join(out), q + 1
        if out is None:
            out = []
        out.append(s[start:b])
        if b + 1 >= n:
            raise _JsonError("bad escape")
        c = s[b + 1]
        if c == "u":
            h = s[b + 2 : b + 6]
            if len(h) != 4:
                raise _JsonError("bad \\u escape")
            v = 0
            for ch in h:
                o = ord(ch)
                if 48 <= o <= 57:
                    d = o - 48
                elif 97 <= o <= 102:
                    d = o - 87
                elif 65 <= o <= 70:
                    d = o - 55
                else:
                    raise _JsonError("bad \\u escape")
                v = v * 16 + d
            if 0xD800 <= v <= 0xDFFF:
                raise _JsonError("surrogate in \\u escape")
            # not chr(v): MicroPython interns the one-character string chr() makes, for good
            # (a qstr): distinct escapes in requests (decoded before the role is checked)
            # kept ~16 bytes of heap each until a reset. The runtime's json makes a plain one.
            out.append(json.loads('"%s"' % s[b : b + 6]))
            i = b + 6
        else:
            e = _ESC.get(c)
            if e is None:
                raise _JsonError("bad escape")
            out.append(e)
            i = b + 2
        start = i


def _parse_int(s, i):
    n = len(s)
    j = i
    if j < n and s[j] == "-":
        j += 1
    k = j
    while k < n and 48 <= ord(s[k]) <= 57:
        k += 1
    if k == j:
        raise _JsonError("bad value")
    if k - j > 1 and s[j] == "0":
        raise _JsonError("leading zero")
    if k - j > MAX_INT_DIGITS:
        raise _JsonError("integer too long")
    if k < n and s[k] in ".eE":
        raise _JsonError("numbers must be integers")
    return int(s[i:k]), k


def _parse_value(s, i, depth):
    if depth > MAX_DEPTH:
        raise _JsonError("nested too deeply")
    n = len(s)
    if i >= n:
        raise _JsonError("unexpected end")
    c = s[i]
    if c == "{":
        d = {}
        i = _ws(s, i + 1)
        if i < n and s[i] == "}":
            return d, i + 1
        while True:
            if i >= n or s[i] != '"':
                raise _JsonError("expected a key")
            k, i = _parse_str(s, i)
            i = _ws(s, i)
            if i >= n or s[i] != ":":
                raise _JsonError("expected ':'")
            v, i = _parse_value(s, _ws(s, i + 1), depth + 1)
            d[k] = v
            i = _ws(s, i)
            if i < n and s[i] == ",":
                i = _ws(s, i + 1)
            elif i < n and s[i] == "}":
                return d, i + 1
            else:
                raise _JsonError("expected ',' or '}'")
    if c == "[":
        a = []
        i = _ws(s, i + 1)
        if i < n and s[i] == "]":
            return a, i + 1
        while True:
            v, i = _parse_value(s, i, depth + 1)
            a.append(v)
            i = _ws(s, i)
            if i < n and s[i] == ",":
                i = _ws(s, i + 1)
            elif i < n and s[i] == "]":
                return a, i + 1
            else:
                raise _JsonError("expected ',' or ']'")
    if c == '"':
        return _parse_str(s, i)
    if s.startswith("true", i):
        return True, i + 4
    if s.startswith("false", i):
        return False, i + 5
    if s.startswith("null", i):
        return None, i + 4
    return _parse_int(s, i)


def parse_json_object(s):
    """Parse a JSON object from str s (strict: printable ASCII, integers only, depth <= 8).
    Raises ValueError."""
    for ch in s:
        o = ord(ch)
        if o < 32 or o > 126:
            raise ValueError("non-printable or non-ASCII character")
    return _parse_object(s)


def _parse_object(s):
    try:
        i = _ws(s, 0)
        if i >= len(s) or s[i] != "{":
            raise _JsonError("expected an object")
        v, i = _parse_value(s, i, 0)
        if _ws(s, i) != len(s):
            raise _JsonError("trailing characters")
        return v
    except _JsonError as e:
        raise ValueError(str(e)) from None
    except (IndexError, ValueError, TypeError, MemoryError) as e:
        raise ValueError("bad JSON: %s" % type(e).__name__) from None


def _lowhex(s):
    for ch in s:
        o = ord(ch)
        if not (48 <= o <= 57 or 97 <= o <= 102):
            return False
    return True


def _hexdigits8(s):
    if len(s) != 8:
        return False
    for ch in s:
        o = ord(ch)
        if not (48 <= o <= 57 or 97 <= o <= 102):
            return False
    return True


def decode(line):
    """The fields of pumpcore.proto.Frame for one line (kind, id, name, body, error, message,
    crc); proto.decode makes the Frame and catches what this raises."""
    if isinstance(line, str):
        for ch in line:
            if ord(ch) > 126:
                return _f(None, None, None, None, BAD_FRAME, "non-ASCII character")
        data = line.encode()
    elif isinstance(line, (bytes, bytearray, memoryview)):
        data = bytes(line)
    else:
        return _f(None, None, None, None, BAD_FRAME, "not bytes")
    n = len(data)
    if n and data[n - 1] == 10:
        n -= 1
    if n and data[n - 1] == 13:
        n -= 1
    if n + 1 > MAX_LINE:
        return _f(None, read_id(data[:40]), None, None, TOO_LONG, "line too long")
    for i in range(n):
        o = data[i]
        if o < 32 or o > 126:
            return _f(None, read_id(data[:40]), None, None, BAD_FRAME, "non-printable byte")
    text = data[:n].decode()
    if n == 0:
        return _f(None, None, None, None, BAD_FRAME, "empty line")
    kind = text[0]
    fid = read_id(text) if kind == "@" else None
    star = text.rfind("*")
    if star < 0 or not _hexdigits8(text[star + 1 :]):
        return _f(None, fid, None, None, BAD_FRAME, "no *crc trailer")
    crc = "%08x" % (crc32(data[:star]) & 0xFFFFFFFF)
    if crc != text[star + 1 :]:
        return _f(None, fid, None, None, BAD_CRC, "CRC mismatch")
    if kind != "@" and kind != "=" and kind != "!":
        return _f(None, None, None, None, BAD_FRAME, "not a frame")
    sp1 = text.find(" ")
    sp2 = text.find(" ", sp1 + 1) if sp1 > 0 else -1
    if sp1 < 0 or sp2 < 0 or sp2 > star:
        return _f(None, fid, None, None, BAD_FRAME, "expected <id> <name> <json>")
    ident = text[1:sp1]
    name = text[sp1 + 1 : sp2]
    if kind == "!":
        if not _valid_seq(ident):
            return _f(None, None, None, None, BAD_FRAME, "bad event sequence number")
    elif not valid_id(ident):
        return _f(None, None, None, None, BAD_FRAME, "bad id")
    fid = ident if kind != "!" else None
    if kind == "=":
        if name != "ok" and name != "err":
            return _f(None, fid, None, None, BAD_FRAME, "response must be ok or err")
    elif not valid_name(name):
        return _f(None, fid, None, None, BAD_FRAME, "bad command name")
    end = star
    m = star - MAC_HEX
    seq = None
    if kind == "@" and m > 0 and text[star - 1] != "}" and text[star - 1] != " ":
        # a signed request: <json>|<seq>|<mac>  (a JSON object ends with "}" or a space)
        end = text.rfind("|", 0, m - 1)
        seq = text[end + 1 : m - 1]
        if (end < 0 or text[m - 1] != "|" or len(seq) > 9 or not _valid_seq(seq)
                or seq[0] == "0" or not _lowhex(text[m:star])):
            return _f(None, fid, None, None, BAD_FRAME, "bad trailer |<seq>|<mac>")
    try:
        body = _parse_object(text[sp2 + 1 : end])  # printable ASCII checked above
    except ValueError as e:
        return _f(None, fid, None, None, BAD_FRAME, "bad JSON: %s" % e)
    if kind == "=" and name == "err":
        code = body.get("code")
        msg = body.get("message", "")
        if not isinstance(code, str) or not isinstance(msg, str):
            return _f(None, fid, None, None, BAD_FRAME, "err without code/message")
    if seq is not None:
        return _f(kind, ident, name, body, None, None, crc, int(seq), m)
    return _f(kind, ident, name, body, None, None, crc)
