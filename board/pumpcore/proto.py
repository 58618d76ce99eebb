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

from pumpcore import canon, const

PROTOCOL_VERSION = 2  # 2: requests after `auth` carry a session MAC and a sequence number
MAX_LINE = const(1024)  # bytes per frame, the newline included
MAX_ID = const(24)
MAX_NAME = const(32)
MAX_DEPTH = const(8)  # deepest nesting level of a value in a frame's JSON (canon's limit)
MAX_INT_DIGITS = const(18)
MAC_HEX = const(32)  # a request's session MAC: 32 lowercase hex digits (16 bytes)
NO_ID = "0"  # the id of an error response to a line whose id could not be read (reserved)
MAX_MESSAGE = const(120)  # characters of an error message (encode_err cuts): always fits a frame

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
THERAPY_RUNNING = "THERAPY_RUNNING"
SAFE_STATE = "SAFE_STATE"
BUSY = "BUSY"
INTERNAL = "INTERNAL"
BAD_MAC = "BAD_MAC"
REPLAY = "REPLAY"

# Roles, lowest first: a role may do everything a lower one may.
ROLE_NONE = "none"
ROLE_PATIENT = "patient"
ROLE_CLINICIAN = "clinician"

# The command dictionary (COMMANDS, INT_RANGES), ERROR_CODES, EVENTS, ROLES and role_rank live
# in pumpcore.commands, loaded per request (the Server's check, beside the decoder) and not
# resident: their tuples took about 5 KB of a board's heap. `proto.COMMANDS` etc. still work
# (loaded at the first use, as MicroPython's asyncio declares its lazy names).
_LAZY = ("COMMANDS", "INT_RANGES", "ERROR_CODES", "EVENTS", "ROLES", "role_rank")


def __getattr__(name):
    if name in _LAZY:
        from pumpcore import commands

        return getattr(commands, name)
    raise AttributeError(name)


class CommandError(Exception):
    """A request refused with a protocol error code."""

    def __init__(self, code, message=""):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


def check_args(cmd, args, role=ROLE_CLINICIAN):
    """The dictionary entry of `cmd` (role, required and optional argument names) if `role`
    may run it with `args`, else CommandError: UNKNOWN_CMD, AUTH_REQUIRED or FORBIDDEN (the
    role), BAD_ARGS (an argument missing, unexpected, or an integer out of its range). The
    check is pumpcore.commands.check, loaded for the call."""
    from pumpcore import commands

    r = commands.check(cmd, args, role)
    if r[1] is not None:
        raise CommandError(r[1], r[2])
    return commands.COMMANDS[cmd]


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


def valid_id(s):
    from pumpcore import parse  # the decoder: transient (docs/architecture.md, Memory)

    return parse.valid_id(s)


def valid_name(s):
    from pumpcore import parse

    return parse.valid_name(s)


def read_id(head):
    """The id from the start of a line (bytes or str), or None: used for error replies."""
    from pumpcore import parse

    return parse.read_id(head)


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


# ------------------------------------------------------------------- decoding
# The strict decoder lives in pumpcore.parse, imported for the call: on a board it is loaded
# for a request's line and dropped before the command runs (App._overlay), so it never sits in
# the heap beside the plan rules or the rest of a command's code.


def parse_json_object(s):
    """Parse a JSON object from str s (strict: printable ASCII, integers only, depth <= 8).
    Raises ValueError."""
    from pumpcore import parse

    return parse.parse_json_object(s)


def _hex_ok(d, i, j):
    while i < j:
        o = d[i]
        if not (48 <= o <= 57 or 97 <= o <= 102):
            return False
        i += 1
    return True


def decode_bare(d):
    """The Frame parse.decode makes of a valid request whose arguments are none or
    non-negative integers (`@<id> <cmd> {}`, `@<id> log {"limit":50,"since":0}`, signed or
    not: `status`, `log`, `refill`, ...), without loading the decoder (a module import, then
    its drop and a collection, cost more than the rest of a `status` round trip, and the
    decoder is the largest module a request loads: paging the log after a restart ran out of
    heap loading it); None for any other line, which parse.decode then judges. It accepts
    only lines made entirely of the parts it checks, each checked as parse.decode checks it
    (tests/board/test_proto_bare.py compares the two)."""
    n = len(d)
    if n and d[n - 1] == 10:
        n -= 1
    if n and d[n - 1] == 13:
        n -= 1
    star = n - 9
    if n < 16 or n > 200 or d[0] != 64 or d[star] != 42 or not _hex_ok(d, star + 1, n):
        return None
    sp1 = d.find(b" ", 1, star)
    sp2 = d.find(b" ", sp1 + 1, star) if sp1 > 1 else -1
    if sp2 < sp1 + 2 or sp1 > MAX_ID + 1 or sp2 - sp1 > MAX_NAME + 1:
        return None
    for i in range(1, sp1):
        o = d[i]
        if not (48 <= o <= 57 or 65 <= o <= 90 or 97 <= o <= 122 or o == 45 or o == 95):
            return None
    for i in range(sp1 + 1, sp2):
        o = d[i]
        if not (48 <= o <= 57 or 97 <= o <= 122 or o == 46 or o == 95):
            return None
    args = {}
    if d[sp2 + 1] != 123:  # {
        return None
    e = sp2 + 2
    if d[e] != 125:  # not {}: "key":digits pairs, no spaces (d[star] is "*": no scan passes it)
        while True:
            if d[e] != 34:  # "
                return None
            j = e + 1
            while j < star and (97 <= d[j] <= 122 or 48 <= d[j] <= 57 or d[j] == 95):
                j += 1
            if j == e + 1 or d[j] != 34 or d[j + 1] != 58:  # ":
                return None
            i = j + 2
            k = i
            while k < star and 48 <= d[k] <= 57:
                k += 1
            if k == i or k - i > MAX_INT_DIGITS or (d[i] == 48 and k - i > 1):
                return None
            args[d[e + 1 : j].decode()] = int(d[i:k])  # a repeated key: the last, as parse
            e = k + 1
            if d[k] == 125:  # }
                break
            if d[k] != 44:  # ,
                return None
    else:
        e += 1
    m = star - MAC_HEX
    if e != star:  # |<seq>|<mac>: a sequence number of 1 to 9 digits, not starting with 0
        if m - e < 3 or m - e > 11 or d[e] != 124 or d[m - 1] != 124 or d[e + 1] == 48:
            return None
        for i in range(e + 1, m - 1):
            if not 48 <= d[i] <= 57:
                return None
        if not _hex_ok(d, m, star):
            return None
    crc = "%08x" % canon.crc_of(d[:star])
    if crc.encode() != d[star + 1 : n]:
        return None  # BAD_CRC: parse.decode says so
    f = Frame(REQUEST, d[1:sp1].decode(), d[sp1 + 1 : sp2].decode(), args, None, None, crc)
    if e != star:
        f.seq = int(d[e + 1 : m - 1])
        f.mac_at = m
    return f


def decode(line):
    """Decode one line (bytes, bytearray, memoryview or str; the newline optional).

    Never raises: returns a Frame, with `error` set when the line is not a valid frame.
    """
    try:
        if isinstance(line, bytes):
            f = decode_bare(line)
            if f is not None:
                return f
        from pumpcore import parse

        t = parse.decode(line)
        f = Frame(t[0], t[1], t[2], t[3], t[4], t[5], t[6])
        if t[7] is not None:  # a signed request: <json>|<seq>|<mac>
            f.seq = t[7]
            f.mac_at = t[8]
        return f
    except Exception as e:  # a decoder bug (or no heap to load it) must not take the firmware down
        return Frame(None, None, None, None, BAD_FRAME, "undecodable (%s)" % type(e).__name__)
