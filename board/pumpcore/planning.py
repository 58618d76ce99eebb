"""The rarely run code of pumpcore.schedule: compiling a plan's start (bolus or prime) into
windows, a patient bolus's windows, the concentration bridge after a refill, and a Schedule's
state from its record across a refill or a reset.

Runs at boot, on plan.set, refill and a patient bolus only. Per call (pumpcore.loader; the
rule: docs/architecture.md, "Memory"). Functions of plain data that return plain data (lists of
(start_ms, end_ms, rate_nl_day)); the Schedule assigns its own fields from them (Schedule(...,
state=state(...)), compile_start in Schedule()).
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


def compile_start(plan, program_ms, pullin_nl_day):
    """The plan's start (a bolus, or a prime of pump and catheter) as windows from
    program_ms, and the board ms where basal starts (where they end): (windows,
    basal_start_ms)."""
    st = plan["start"]
    if st["kind"] == "bolus":
        nl = dose.ng_to_nl(st["ng"], plan["conc_ng_ml"])
        rate = bolus_rate_nl_day(nl, st["dur_s"] * 1000)
    else:
        nl = st["pump_nl"] + st["catheter_nl"]
        rate = st["nl_min"] * 1440
    wins = bolus_windows(program_ms, nl, rate, pullin_nl_day)
    return wins, wins[-1][1] if wins else program_ms


def add_bridge(bridges, steps, old_conc, dead_steps):
    """A refill with a new concentration: the drug in the reservoir until now (`old_conc`)
    fills the line behind the drugs still in it (`bridges`, Schedule.bridges; `steps`, the
    account's steps now). Each is dosed at its own strength until the account's steps have
    pushed it out of the tip (Schedule.conc_at). Returns the new bridges: those still live,
    then the old drug for `dead_steps` from now."""
    live = [b for b in bridges if b[1] > steps]
    live.append([old_conc, steps + dead_steps])
    return live


def state(plan, d, seen_ms, slots=None, delta_ms=0):
    """The Schedule's state from its record d (Schedule.to_dict), for a Schedule of `plan`:
    (program_ms, basal_start_ms, start_windows, overlays, bridges, slot_day, slot_ms,
    seen_ms), the Schedule(..., state=) argument. The periodic slots are those of `slots` (a
    newer Schedule.slots() record, e.g. the count record's) if it is this plan's, else d's if
    they are, else none given yet (slot_day None, seen_ms the given one: the first settle()
    takes the slots as programming leaves them, nothing shown before is given). delta_ms:
    board time restarted (a reset): every board-ms instant moves by it."""
    program_ms = d["program_ms"] + delta_ms  # (a TypeError first for a record that is not one)
    basal_ms = d["basal_start_ms"] + delta_ms
    wins = [(s + delta_ms, e + delta_ms, r) for s, e, r in d["start_windows"]]
    over = [(s + delta_ms, e + delta_ms, r) for s, e, r in d["overlays"]]
    bridges = [list(b) for b in d["bridges"]]
    per = plan["periodic"] if plan else None
    day = ms = None
    for rec in (slots, d.get("slots")):
        if rec is not None and per is not None and len(rec[0]) == len(per["times_min"]):
            day = list(rec[0])
            ms = [None if m is None else m + delta_ms for m in rec[1]]
            seen_ms = rec[2]
            break
    return program_ms, basal_ms, wins, over, bridges, day, ms, seen_ms + delta_ms
