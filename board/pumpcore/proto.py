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

from pumpcore import canon

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


PROTOCOL_VERSION = 1
MAX_LINE = const(1024)  # bytes per frame, the newline included
MAX_ID = const(24)
MAX_NAME = const(32)
MAX_DEPTH = const(8)  # deepest nesting level of a value in a frame's JSON (canon's limit)
MAX_INT_DIGITS = const(18)
NO_ID = "0"  # the id of an error response to a line whose id could not be read

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

ERROR_CODES = (
    BAD_CRC, TOO_LONG, BAD_FRAME, UNKNOWN_CMD, BAD_ARGS, AUTH_REQUIRED, FORBIDDEN,
    AUTH_FAILED, THROTTLED, PLAN_INVALID, LOCKOUT, MAX_24H, BOLUS_NOT_ALLOWED, CAP_EXCEEDED,
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
    "auth": (ROLE_NONE, ("role", "mac"), ()),
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
}

# Events the firmware pushes unsolicited.
EVENTS = (
    "alarm.raised", "alarm.cleared", "bolus.started", "bolus.done", "bolus.refused",
    "plan.changed", "refill", "reset", "therapy.stopped", "therapy.resumed",
)  # fmt: skip


class CommandError(Exception):
    """A request refused with a protocol error code."""

    def __init__(self, code, message=""):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


def check_args(cmd, args):
    """Raise CommandError(UNKNOWN_CMD | BAD_ARGS) unless args fit the dictionary entry."""
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
            raise CommandError(BAD_ARGS, "unexpected argument " + k)
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
    """

    __slots__ = ("kind", "id", "name", "body", "error", "message", "crc")

    def __init__(self, kind, fid, name, body, error=None, message=None, crc=None):
        self.kind = kind
        self.id = fid
        self.name = name
        self.body = body
        self.error = error
        self.message = message
        self.crc = crc

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


def decode(line):
    """Decode one line (bytes, bytearray, memoryview or str; the newline optional).

    Never raises: returns a Frame, with `error` set when the line is not a valid frame.
    """
    try:
        from pumpcore import parse

        return Frame(*parse.decode(line))
    except Exception as e:  # a decoder bug (or no heap to load it) must not take the firmware down
        return Frame(None, None, None, None, BAD_FRAME, "undecodable (%s)" % type(e).__name__)
