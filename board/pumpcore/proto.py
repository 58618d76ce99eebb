"""The wire protocol: command dictionary, frames, error codes (CPython and MicroPython).

One frame per line, printable ASCII only (so 0x03/0x04 never appear and mpremote can always
interrupt the firmware):

    request   @<id> <cmd> <json>*<crc>\\n
    response  =<id> ok <json>*<crc>\\n      or   =<id> err {"code":..,"message":..}*<crc>\\n
    event     !<seq> <name> <json>*<crc>\\n

<crc> is 8 lowercase hex digits of CRC32 (binascii.crc32) over every byte before the `*`.
<json> is always an object, encoded canonically (pumpcore.canon: sorted keys, no spaces,
integers only). The decoder here is strict and identical on both runtimes: it never raises;
it returns a Frame whose `error` is None or one of the codes below.

docs/protocol.md is the reference; keep the two in step.
"""

from binascii import crc32

from pumpcore import canon

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


PROTOCOL_VERSION = 2  # 2: requests after `auth` carry a session MAC and a sequence number
MAX_LINE = const(1024)  # bytes per frame, the newline included
MAX_ID = const(24)
MAX_NAME = const(32)
MAX_DEPTH = const(8)  # deepest nesting level of a value in a frame's JSON (canon's limit)
MAX_INT_DIGITS = const(18)
MAC_HEX = const(32)  # a request's session MAC: 32 lowercase hex digits (16 bytes)
NO_ID = "0"  # the id of an error response to a line whose id could not be read (reserved)
MAX_MESSAGE = const(120)  # characters of an error message (encode_err cuts): always fits a frame
_QUOTE = const(32)  # characters of an argument name quoted in a message

# Error codes
BAD_CRC = "BAD_CRC"
TOO_LONG = "TOO_LONG"
BAD_FRAME = "BAD_FRAME"
UNKNOWN_CMD = "UNKNOWN_CMD"
BAD_ARGS = "BAD_ARGS"
AUTH_REQUIRED = "AUTH_REQUIRED"
FORBIDDEN = "FORBIDDEN"
AUTH_FAILED = "AUTH_FAILED"
THROTTLED = "THROTTLED"
PLAN_INVALID = "PLAN_INVALID"
LOCKOUT = "LOCKOUT"
MAX_24H = "MAX_24H"
BOLUS_NOT_ALLOWED = "BOLUS_NOT_ALLOWED"
CAP_EXCEEDED = "CAP_EXCEEDED"
THERAPY_STOPPED = "THERAPY_STOPPED"
SAFE_STATE = "SAFE_STATE"
BUSY = "BUSY"
INTERNAL = "INTERNAL"
BAD_MAC = "BAD_MAC"
REPLAY = "REPLAY"

ERROR_CODES = (
    BAD_CRC, TOO_LONG, BAD_FRAME, UNKNOWN_CMD, BAD_ARGS, AUTH_REQUIRED, FORBIDDEN,
    AUTH_FAILED, THROTTLED, BAD_MAC, REPLAY, PLAN_INVALID, LOCKOUT, MAX_24H, BOLUS_NOT_ALLOWED, CAP_EXCEEDED,
    THERAPY_STOPPED, SAFE_STATE, BUSY, INTERNAL,
)  # fmt: skip

# Roles, lowest first: a role may do everything a lower one may.
ROLE_NONE = "none"
ROLE_PATIENT = "patient"
ROLE_CLINICIAN = "clinician"
ROLES = (ROLE_NONE, ROLE_PATIENT, ROLE_CLINICIAN)


def role_rank(role):
    """0 for none, 1 patient, 2 clinician, -1 for anything else."""
    for i in range(len(ROLES)):
        if ROLES[i] == role:
            return i
    return -1


# The command dictionary: name -> (role, required arg keys, optional arg keys).
COMMANDS = {
    "hello": (ROLE_NONE, (), ()),
    "auth": (ROLE_NONE, ("role", "mac", "cnonce"), ()),
    "status": (ROLE_PATIENT, (), ()),
    "plan.get": (ROLE_PATIENT, (), ()),
    "plan.set": (ROLE_CLINICIAN, ("plan",), ()),
    "bolus": (ROLE_PATIENT, (), ()),
    "refill": (ROLE_CLINICIAN, ("volume_nl",), ("conc_ng_ml", "refill_by_epoch_s")),
    "calib.get": (ROLE_PATIENT, (), ()),
    "calib.set": (ROLE_CLINICIAN, ("step_pl",), ()),
    "alarms": (ROLE_PATIENT, (), ()),
    "ack": (ROLE_CLINICIAN, (), ("kind",)),
    "alarm.test": (ROLE_CLINICIAN, (), ()),
    "log": (ROLE_PATIENT, (), ("since", "limit")),
    "clock.get": (ROLE_PATIENT, (), ()),
    "clock.set": (ROLE_CLINICIAN, ("epoch_s", "offset_s"), ("next_change_epoch_s", "next_offset_s")),
    "therapy.stop": (ROLE_CLINICIAN, (), ()),
    "therapy.resume": (ROLE_CLINICIAN, (), ()),
    "motor.run": (ROLE_CLINICIAN, ("steps",), ("rate_nl_day",)),
    "maintenance": (ROLE_CLINICIAN, (), ()),
}

# Every integer argument and its range (inclusive): name, low, high, flat (a dict would cost a
# hash table in the resident heap). Commands then check their own, tighter rules. An optional
# argument may also be null (absent). Epoch times: 2000-01-01 .. 2100-01-01 UTC.
INT_RANGES = (
    "volume_nl", 1, 1_000_000_000, "conc_ng_ml", 1, 1_000_000_000,
    "refill_by_epoch_s", 946_684_800, 4_102_444_800, "step_pl", 1, 1_000_000_000,
    "since", 0, 999_999_999, "limit", 1, 50,
    "epoch_s", 946_684_800, 4_102_444_800, "offset_s", -86_400, 86_400,
    "next_change_epoch_s", 946_684_800, 4_102_444_800, "next_offset_s", -86_400, 86_400,
    "steps", 1, 10_000_000, "rate_nl_day", 1, 10_000_000_000_000,
)  # fmt: skip


# Events the firmware pushes unsolicited.
EVENTS = (
    "alarm.raised", "alarm.cleared", "bolus.started", "bolus.done", "bolus.refused",
    "plan.changed", "refill", "reset", "therapy.stopped", "therapy.resumed", "fault",
    "maintenance",
)  # and the audit's auth.ok, auth.fail, cmd (docs/protocol.md)  # fmt: skip


class CommandError(Exception):
    """A request refused with a protocol error code."""

    def __init__(self, code, message=""):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


def check_args(cmd, args):
    """Raise CommandError(UNKNOWN_CMD | BAD_ARGS) unless args fit the dictionary entry and
    every integer argument is within its range (INT_RANGES)."""
    entry = COMMANDS.get(cmd)
    if entry is None:
        raise CommandError(UNKNOWN_CMD, "unknown command " + cmd)
    if not isinstance(args, dict):
        raise CommandError(BAD_ARGS, "arguments must be an object")
    for k in entry[1]:
        if k not in args:
            raise CommandError(BAD_ARGS, "missing argument " + k)
    for k in args:
        if k not in entry[1] and k not in entry[2]:
            raise CommandError(BAD_ARGS, "unexpected argument " + k[:_QUOTE])
        i = 0
        while i < len(INT_RANGES):
            if INT_RANGES[i] == k:
                v = args[k]
                lo = INT_RANGES[i + 1]
                hi = INT_RANGES[i + 2]
                if v is None and k in entry[2]:
                    break
                if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                    raise CommandError(BAD_ARGS, "%s must be an integer %d..%d" % (k, lo, hi))
                break
            i += 3
    return entry


# ---------------------------------------------------------------- frames

REQUEST = "@"
RESPONSE = "="
EVENT = "!"


class Frame:
    """A decoded line.

    kind: "@", "=", "!" or None when the line is not a valid frame.
    id: the request id (requests, responses) or the sequence number as text (events); may be
        set even when `error` is set, if it could be read.
    name: the command (requests), "ok"/"err" (responses), the event name (events).
    body: the JSON object (dict); for an "err" response {"code":..., "message":...}.
    error/message: None, or the protocol error code and a reason, when the line is invalid.
    crc: the 8 hex digits of the frame (used by the server to recognise retries).
    seq/mac_at: a signed request's sequence number and where its MAC starts in the line (the
        MAC covers the bytes before it); seq None for a request without a session trailer.
    """

    __slots__ = ("kind", "id", "name", "body", "error", "message", "crc", "seq", "mac_at")

    def __init__(self, kind, fid, name, body, error=None, message=None, crc=None):
        self.kind = kind
        self.id = fid
        self.name = name
        self.body = body
        self.error = error
        self.message = message
        self.crc = crc
        self.seq = None
        self.mac_at = 0

    def __repr__(self):
        if self.error:
            return "Frame(error=%s, id=%r, %s)" % (self.error, self.id, self.message)
        return "Frame(%s%s %s %r)" % (self.kind, self.id, self.name, self.body)


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


def _frame(head, body):
    """The frame line (bytes), encoded in chunks with a running CRC (canon.write): the line
    itself is the only block its size (a status answer is ~700 bytes, and a fragmented board
    heap may not have several such blocks free)."""
    chunks = []
    try:
        crc = canon.write(body, chunks.append, head + " ")
    except canon.CanonError as e:
        raise CommandError(BAD_ARGS, "cannot encode: %s" % e) from None
    n = 10
    for c in chunks:
        n += len(c)
    if n > MAX_LINE:
        raise CommandError(TOO_LONG, "frame of %d bytes exceeds %d" % (n, MAX_LINE))
    chunks.append(b"*%08x\n" % crc)
    return b"".join(chunks)


def encode_request(req_id, cmd, args=None):
    if not valid_id(req_id):
        raise CommandError(BAD_FRAME, "invalid request id")
    if not valid_name(cmd):
        raise CommandError(BAD_FRAME, "invalid command name")
    return _frame("@" + req_id + " " + cmd, {} if args is None else args)


def encode_ok(req_id, result):
    return _frame("=" + req_id + " ok", {} if result is None else result)


def encode_err(req_id, code, message=""):
    """An error answer; the message is cut to MAX_MESSAGE characters (so it always fits a
    frame, whatever it quotes)."""
    if not isinstance(message, str):
        message = "?"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return _frame("=" + req_id + " err", {"code": code, "message": message})


def encode_event(seq, name, data=None):
    return _frame("!%d %s" % (seq, name), {} if data is None else data)


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
            out.append(chr(v))
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


def _hexdigits8(s):
    return len(s) == 8 and _lowhex(s)


def _lowhex(s):
    for ch in s:
        o = ord(ch)
        if not (48 <= o <= 57 or 97 <= o <= 102):
            return False
    return True


def decode(line):
    """Decode one line (bytes, bytearray, memoryview or str; the newline optional).

    Never raises: returns a Frame, with `error` set when the line is not a valid frame.
    """
    try:
        return _decode(line)
    except Exception as e:  # a decoder bug must not take the firmware down
        return Frame(None, None, None, None, BAD_FRAME, "undecodable (%s)" % type(e).__name__)


def _decode(line):
    if isinstance(line, str):
        for ch in line:
            if ord(ch) > 126:
                return Frame(None, None, None, None, BAD_FRAME, "non-ASCII character")
        data = line.encode()
    elif isinstance(line, (bytes, bytearray, memoryview)):
        data = bytes(line)
    else:
        return Frame(None, None, None, None, BAD_FRAME, "not bytes")
    n = len(data)
    if n and data[n - 1] == 10:
        n -= 1
    if n and data[n - 1] == 13:
        n -= 1
    if n + 1 > MAX_LINE:
        return Frame(None, read_id(data[:40]), None, None, TOO_LONG, "line too long")
    for i in range(n):
        o = data[i]
        if o < 32 or o > 126:
            return Frame(None, read_id(data[:40]), None, None, BAD_FRAME, "non-printable byte")
    text = data[:n].decode()
    if n == 0:
        return Frame(None, None, None, None, BAD_FRAME, "empty line")
    kind = text[0]
    fid = read_id(text) if kind == "@" else None
    star = text.rfind("*")
    if star < 0 or not _hexdigits8(text[star + 1 :]):
        return Frame(None, fid, None, None, BAD_FRAME, "no *crc trailer")
    crc = "%08x" % (crc32(data[:star]) & 0xFFFFFFFF)
    if crc != text[star + 1 :]:
        return Frame(None, fid, None, None, BAD_CRC, "CRC mismatch")
    if kind != "@" and kind != "=" and kind != "!":
        return Frame(None, None, None, None, BAD_FRAME, "not a frame")
    sp1 = text.find(" ")
    sp2 = text.find(" ", sp1 + 1) if sp1 > 0 else -1
    if sp1 < 0 or sp2 < 0 or sp2 > star:
        return Frame(None, fid, None, None, BAD_FRAME, "expected <id> <name> <json>")
    ident = text[1:sp1]
    name = text[sp1 + 1 : sp2]
    if kind == "!":
        if not _valid_seq(ident):
            return Frame(None, None, None, None, BAD_FRAME, "bad event sequence number")
    elif not valid_id(ident):
        return Frame(None, None, None, None, BAD_FRAME, "bad id")
    fid = ident if kind != "!" else None
    if kind == "=":
        if name != "ok" and name != "err":
            return Frame(None, fid, None, None, BAD_FRAME, "response must be ok or err")
    elif not valid_name(name):
        return Frame(None, fid, None, None, BAD_FRAME, "bad command name")
    end = star
    m = star - MAC_HEX
    if kind == "@" and m > 0 and text[star - 1] != "}" and text[star - 1] != " ":
        # a signed request: <json>|<seq>|<mac>  (a JSON object ends with "}" or a space)
        end = text.rfind("|", 0, m - 1)
        seq = text[end + 1 : m - 1]
        if (end < 0 or text[m - 1] != "|" or len(seq) > 9 or not _valid_seq(seq)
                or seq[0] == "0" or not _lowhex(text[m:star])):
            return Frame(None, fid, None, None, BAD_FRAME, "bad trailer |<seq>|<mac>")
    try:
        body = _parse_object(text[sp2 + 1 : end])  # printable ASCII checked above
    except ValueError as e:
        return Frame(None, fid, None, None, BAD_FRAME, "bad JSON: %s" % e)
    if kind == "=" and name == "err":
        code = body.get("code")
        msg = body.get("message", "")
        if not isinstance(code, str) or not isinstance(msg, str):
            return Frame(None, fid, None, None, BAD_FRAME, "err without code/message")
    f = Frame(kind, ident, name, body, None, None, crc)
    if end < star:
        f.seq = int(seq)
        f.mac_at = m
    return f
