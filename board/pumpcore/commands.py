"""The command dictionary of the wire protocol (docs/protocol.md): the role each command needs
and its arguments, every integer argument's range, the error codes, the events.

Per call (pumpcore.loader): the Server loads it for a request's check (proto.check_args), beside
the strict decoder (pumpcore.parse), and the App sheds both before a command's own code loads.
pumpcore.proto offers these names too (`proto.COMMANDS`, ...), loading this module at their
first use. It imports nothing of pumpcore.proto (no import circle): its answers are the
protocol's codes as strings, equal to proto's constants (tests/board/test_proto.py).
"""

from pumpcore import const

_QUOTE = const(32)  # characters of an argument name quoted in a message

ERROR_CODES = (
    "BAD_CRC", "TOO_LONG", "BAD_FRAME", "UNKNOWN_CMD", "BAD_ARGS", "AUTH_REQUIRED", "FORBIDDEN",
    "AUTH_FAILED", "THROTTLED", "BAD_MAC", "REPLAY", "PLAN_INVALID", "LOCKOUT", "MAX_24H",
    "BOLUS_NOT_ALLOWED", "CAP_EXCEEDED", "THERAPY_STOPPED", "THERAPY_RUNNING", "SAFE_STATE",
    "BUSY", "INTERNAL",
)  # fmt: skip

# Roles, lowest first: a role may do everything a lower one may.
_NONE = "none"  # proto._NONE, _PATIENT, _CLINICIAN
_PATIENT = "patient"
_CLINICIAN = "clinician"
ROLES = (_NONE, _PATIENT, _CLINICIAN)


def role_rank(role):
    """0 for none, 1 patient, 2 clinician, -1 for anything else."""
    for i in range(len(ROLES)):
        if ROLES[i] == role:
            return i
    return -1


# The command dictionary: name -> (role, required arg keys, optional arg keys).
COMMANDS = {
    "hello": (_NONE, (), ()),
    "auth": (_NONE, ("role", "mac", "cnonce"), ()),
    "status": (_PATIENT, (), ()),
    "plan.get": (_PATIENT, (), ()),
    "plan.set": (_CLINICIAN, ("plan",), ()),
    "bolus": (_PATIENT, (), ()),
    "refill": (_CLINICIAN, ("volume_nl",), ("conc_ng_ml", "refill_by_epoch_s")),
    "calib.get": (_PATIENT, (), ()),
    "calib.set": (_CLINICIAN, ("step_pl",), ()),
    "alarms": (_PATIENT, (), ()),
    "ack": (_CLINICIAN, (), ("kind",)),
    "alarm.test": (_CLINICIAN, (), ()),
    "log": (_PATIENT, (), ("since", "limit")),
    "clock.get": (_PATIENT, (), ()),
    "clock.set": (_CLINICIAN, ("epoch_s", "offset_s"), ("next_change_epoch_s", "next_offset_s")),
    "therapy.stop": (_CLINICIAN, (), ()),
    "therapy.resume": (_CLINICIAN, (), ()),
    "motor.run": (_CLINICIAN, ("steps",), ("rate_nl_day",)),
    "maintenance": (_CLINICIAN, (), ()),
}

# Every integer argument and its range (inclusive): name, low, high, flat (a dict would cost a
# hash table). Commands then check their own, tighter rules. An optional
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
# Events the firmware pushes unsolicited and logs (their payloads: host/pumprig/protocol.schema.json).
EVENTS = (
    "alarm.raised", "alarm.cleared", "alarm.test", "auth.ok", "auth.fail", "bolus.started",
    "bolus.done", "bolus.refused", "bolus.late", "bolus.skipped", "calibrated", "cap.reached",
    "clock.set", "cmd", "fault", "fault.cleared", "maintenance", "plan.changed", "refill",
    "reset", "stall", "therapy.stopped", "therapy.resumed",
)  # fmt: skip


def check(cmd, args, role):
    """(role needed, None, None) if `role` may run `cmd` with `args` as the dictionary says,
    else (role needed or None, code, message): UNKNOWN_CMD; AUTH_REQUIRED (no role) or
    FORBIDDEN (a lower one); BAD_ARGS for an argument missing, unexpected, or an integer
    outside its range (INT_RANGES; an optional one may be null)."""
    entry = COMMANDS.get(cmd)
    if entry is None:
        return None, "UNKNOWN_CMD", "unknown command " + cmd
    r = entry[0]
    err = _args(entry, args)
    if role_rank(r) > role_rank(role):
        return r, "AUTH_REQUIRED" if role_rank(role) <= 0 else "FORBIDDEN", \
            "%s needs the %s role" % (cmd, r)
    if err is not None:
        return r, "BAD_ARGS", err
    return r, None, None


def _args(entry, args):
    """None if the arguments fit the entry, else why not."""
    if not isinstance(args, dict):
        return "arguments must be an object"
    for k in entry[1]:
        if k not in args:
            return "missing argument " + k
    for k in args:
        if k not in entry[1] and k not in entry[2]:
            return "unexpected argument " + k[:_QUOTE]
        i = 0
        while i < len(INT_RANGES):
            if INT_RANGES[i] == k:
                v = args[k]
                lo = INT_RANGES[i + 1]
                hi = INT_RANGES[i + 2]
                if v is None and k in entry[2]:
                    break
                if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                    return "%s must be an integer %d..%d" % (k, lo, hi)
                break
            i += 3
    return None
