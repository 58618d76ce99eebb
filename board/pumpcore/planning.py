"""The rarely run code of pumpcore.schedule: compiling a plan's start (bolus or prime) into
windows, a patient bolus's windows, the concentration bridge after a refill, and the moves of a
Schedule across a reset (load_dict, shift).

Runs at boot, on plan.set, refill and a patient bolus only. Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory").
Functions taking the Schedule; what they produce is plain data on it (lists of (start_ms,
end_ms, rate_nl_day)).
"""

from pumpcore import const, dose
from pumpcore.dose import bolus_rate_nl_day
from pumpcore.patient import (  # noqa: F401  (a bolus's windows, with the motor's ramp)
    RAMP_STAGE_MS,
    RAMP_STAGES,
    add_bolus,
    bolus_windows,
)

_DAY_MS = const(86_400_000)


def windows_volume_nl(windows):
    acc = 0
    for s, e, r in windows:
        acc += r * (e - s)
    return acc // _DAY_MS


def compile_start(sched):
    """The plan's start (a bolus, or a prime of pump and catheter) as windows from
    program_ms; basal starts where they end."""
    plan = sched.plan
    st = plan["start"]
    if st["kind"] == "bolus":
        nl = dose.ng_to_nl(st["ng"], plan["conc_ng_ml"])
        rate = bolus_rate_nl_day(nl, st["dur_s"] * 1000)
    else:
        nl = st["pump_nl"] + st["catheter_nl"]
        rate = st["nl_min"] * 1440
    sched.start_windows = bolus_windows(sched.program_ms, nl, rate, sched.pullin_nl_day)
    if sched.start_windows:
        sched.basal_start_ms = sched.start_windows[-1][1]


def add_bridge(sched, old_conc, dead_steps):
    """A refill with a new concentration: the drug in the reservoir until now (`old_conc`)
    fills the line behind the drugs still in it. Each is dosed at its own strength until the
    account's steps have pushed it out of the tip (Schedule.conc_at). Returns the steps the
    bridge lasts from now."""
    now = sched.steps
    live = [b for b in sched.bridges if b[1] > now]
    live.append([old_conc, now + dead_steps])
    sched.bridges = live
    return dead_steps


def shift(sched, delta_ms):
    """Board time restarted (reset): move every board-ms instant by delta."""
    sched.program_ms += delta_ms
    sched.basal_start_ms += delta_ms
    sched.start_windows = [(s + delta_ms, e + delta_ms, r) for s, e, r in sched.start_windows]
    sched.overlays = [(s + delta_ms, e + delta_ms, r) for s, e, r in sched.overlays]
    sched.seen_ms += delta_ms
    if sched.slot_ms is not None:
        sched.slot_ms = [None if m is None else m + delta_ms for m in sched.slot_ms]


def load_dict(sched, d):
    sched.program_ms = d["program_ms"]
    sched.basal_start_ms = d["basal_start_ms"]
    sched.start_windows = [tuple(w) for w in d["start_windows"]]
    sched.overlays = [tuple(w) for w in d["overlays"]]
    sched.bridges = [list(b) for b in d["bridges"]]
    load_slots(sched, d.get("slots"))


def load_slots(sched, rec):
    """Schedule.slots() as recorded; ignored if absent or not this plan's (then the first
    settle() takes the slots as programming leaves them: nothing shown before is given)."""
    per = sched.plan["periodic"] if sched.plan else None
    if rec is None or per is None or len(rec[0]) != len(per["times_min"]):
        return
    sched.slot_day = list(rec[0])
    sched.slot_ms = list(rec[1])
    sched.seen_ms = rec[2]
