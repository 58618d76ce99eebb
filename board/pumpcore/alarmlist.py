"""The alarm list of pumpcore.alarms beyond raising and clearing: restoring it from the state
record (boot), its protocol view (the `alarms` command) and acknowledging (the `ack` command).

Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Imported by
pumpcore.clinician and pumpcore.restore; functions taking the Alarms.
"""

from pumpcore import const
from pumpcore.alarms import CRITICAL_KINDS, KINDS, is_critical

# entry fields, as in pumpcore.alarms (its underscored consts are not module attributes on
# MicroPython)
_SINCE = const(0)
_ACTIVE = const(1)
_ACKED = const(2)


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


def restore(d):
    """The alarm list (Alarms.load takes it) of what Alarms.to_dict() saved; unknown kinds (a
    newer firmware's) are skipped."""
    items = {}
    for it in d.get("alarms", ()):
        k = it[0]
        if k in KINDS:
            items[k] = [it[1], bool(it[2]), bool(it[3]), it[4]]
    return items
