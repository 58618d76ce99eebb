"""The alarm list of pumpcore.alarms beyond raising and clearing: building the tone patterns
(boot), restoring it from the state record (boot), its protocol view (the `alarms` command) and
acknowledging (the `ack` command).

Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Imported by App.__init__, pumpcore.clinician and
pumpcore.restore; functions taking plain settings or the Alarms.
"""

from pumpcore import const
from pumpcore.alarms import CRITICAL_KINDS, KINDS, is_critical

# entry fields, as in pumpcore.alarms (its underscored consts are not module attributes on
# MicroPython)
_SINCE = const(0)
_ACTIVE = const(1)
_ACKED = const(2)


def _pos_int(name, v, lo=1):
    if not isinstance(v, int) or v < lo:
        raise ValueError("%s must be an integer >= %d" % (name, lo))
    return v


def _total(pattern):
    t = 0
    for _f, d in pattern:
        t += d
    return t


def patterns(
    hi_hz=880,
    lo_hz=660,
    critical_pairs=4,
    critical_tone_ms=250,
    critical_repeat_ms=600_000,
    single_beeps=3,
    single_on_ms=500,
    single_off_ms=500,
    single_repeat_ms=3_600_000,
    blink_ms=500,
    test_gap_ms=1000,
):
    """TonePlayer's settings, checked (ValueError if one is out of range), as what
    TonePlayer(patterns) takes: (critical, single, critical_repeat_ms, single_repeat_ms,
    blink_ms, test pattern, test_ms), a pattern a tuple of (freq_hz, dur_ms)."""
    _pos_int("hi_hz", hi_hz)
    _pos_int("lo_hz", lo_hz)
    _pos_int("critical_pairs", critical_pairs)
    _pos_int("critical_tone_ms", critical_tone_ms)
    _pos_int("single_beeps", single_beeps)
    _pos_int("single_on_ms", single_on_ms)
    _pos_int("single_off_ms", single_off_ms)
    _pos_int("blink_ms", blink_ms)
    _pos_int("test_gap_ms", test_gap_ms, 0)
    crit = ((hi_hz, critical_tone_ms), (lo_hz, critical_tone_ms)) * critical_pairs
    single = ((hi_hz, single_on_ms), (0, single_off_ms)) * (single_beeps - 1) + (
        (hi_hz, single_on_ms),
    )
    if _pos_int("critical_repeat_ms", critical_repeat_ms) < _total(crit):
        raise ValueError("critical_repeat_ms is shorter than the pattern")
    if _pos_int("single_repeat_ms", single_repeat_ms) < _total(single) + single_off_ms:
        raise ValueError("single_repeat_ms is shorter than the pattern")
    test = crit + ((0, test_gap_ms),) + single if test_gap_ms else crit + single
    return (crit, single, critical_repeat_ms, single_repeat_ms, blink_ms, test, _total(test))


def ack(a, kind=None):
    """Acknowledge one kind (or all when None): silences it; one whose condition has
    cleared is removed. Returns the kinds acknowledged by this call."""
    items = a.items
    if kind is not None:
        is_critical(kind)
        kinds = (kind,) if kind in items else ()
    else:
        kinds = a.active()
    done = []
    for k in kinds:
        e = items[k]
        if e[_ACKED]:
            continue
        done.append(k)
        if e[_ACTIVE]:
            e[_ACKED] = True
        else:
            del items[k]
    return done


def to_list(a):
    """The protocol view: [{kind, critical, active, acked, since_epoch_s}]."""
    out = []
    for k in a.active():
        e = a.items[k]
        out.append(
            {
                "kind": k,
                "critical": k in CRITICAL_KINDS,
                "active": e[_ACTIVE],
                "acked": e[_ACKED],
                "since_epoch_s": e[_SINCE],
            }
        )
    return out


def restore(a, d):
    """Load what Alarms.to_dict() saved; unknown kinds (a newer firmware's) are skipped."""
    items = {}
    for it in d.get("alarms", ()):
        k = it[0]
        if k in KINDS:
            items[k] = [it[1], bool(it[2]), bool(it[3]), it[4]]
    a.items = items
    a.gen += 1
    return a
