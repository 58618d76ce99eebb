"""The rarely run half of the periodic slots (pumpcore.schedule, Schedule.settle): recording
the slots the clock has reached, and what to do with one the clock jumped over or shows again.

Runs when a slot's start comes (a few times a day), at clock.set and after a reset, imported by
Schedule.settle past its fast path. Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). A module of its own so that the heap a
patient bolus or a plan.set needs (pumpcore.planning) does not grow with it. Functions only,
reading the Schedule; they return plain data (slot_day, slot_ms, seen_ms, due_ms), which the
Schedule assigns to its own fields.

The rule (docs/plans.md): a periodic bolus starts at most once per slot and local day. A slot
the clock jumped over by at most LATE_MAX_MS is given late, whole, from the jump; by more it is
skipped. Events say which.
"""

from pumpcore import const

_DAY_MS = const(86_400_000)
# a periodic slot the clock jumped over by at most this much is given late, else skipped
LATE_MAX_MS = const(3_600_000)


def settle(sched, t_ms):
    """Schedule.settle past its fast path: per slot, the latest start on the clock at or
    before t. Reached while the clock ran (no jump since): recorded (day, board ms start).
    Else settle_slot. Returns the Schedule's slots after it and its events: (slot_day,
    slot_ms, seen_ms, due_ms, the events [(kind, data)] or None when nothing changed);
    due_ms is the next instant at which there can be anything to do."""
    per = sched.plan["periodic"]
    clk = sched.clock
    local = clk.local_ms(t_ms)
    day_ms = local % _DAY_MS
    times = per["times_min"]
    seen = sched.seen_ms
    if sched.slot_day is None:
        # right after programming: each slot as given on the local day of its last start
        # before program_ms (a plan gives nothing its clock showed before it)
        p_local = clk.local_ms(sched.program_ms)
        days = []
        for tm in times:
            since = (p_local % _DAY_MS - tm * 60_000) % _DAY_MS or _DAY_MS
            days.append((p_local - since) // _DAY_MS)
        ms = [None] * len(days)
        seen = sched.program_ms
    else:
        days = list(sched.slot_day)
        ms = list(sched.slot_ms)
    lo = clk.steady_from_ms(t_ms)
    out = None
    due = clk.next_offset_change_ms(t_ms)
    basal = sched.basal_start_ms
    for i in range(len(times)):
        since = (day_ms - times[i] * 60_000) % _DAY_MS
        if due is None or t_ms + _DAY_MS - since < due:
            due = t_ms + _DAY_MS - since  # its next start on this clock
        s = t_ms - since
        d = (local - since) // _DAY_MS
        if d > days[i] and s >= lo:
            # reached while the clock ran: started on time (or already over)
            days[i] = d
            if s >= basal:
                ms[i] = s
            out = out or []
        elif d > days[i] or (s > seen and s >= lo):
            # jumped over (given late or skipped), or shown again on a day it was given
            out = settle_slot(sched.plan, basal, days, ms, t_ms, i, since, d, out or [])
    return days, ms, t_ms, due, out


def settle_slot(plan, basal_start_ms, days, ms, t_ms, i, since, d, out):
    """settle's rare cases for slot i (started `since` ms of local time before t, on local
    day d), on settle's lists `days` (slot_day) and `ms` (slot_ms); appends its event to `out`
    and returns it.

    - day d not given yet: the clock jumped over the start (spring forward, clock.set forward,
      an RTC after a power cut). By at most LATE_MAX_MS: the whole bolus from t
      (`bolus.late`), else none (`bolus.skipped`). Marked given for day d either way.
    - day d already given (or a later day): the clock showed the slot's time again (autumn
      change, clock.set back): nothing is given (`bolus.skipped`, reason "given").
    """
    tm = plan["periodic"]["times_min"][i]
    data = {"slot": "%02d:%02d" % (tm // 60, tm % 60)}
    if d <= days[i]:
        data["reason"] = "given"
        out.append(("bolus.skipped", data))
        return out
    days[i] = d
    if t_ms < basal_start_ms:
        return out  # during the plan's start: periodic boluses wait for the basal
    data["late_s"] = since // 1000
    if since <= LATE_MAX_MS:
        ms[i] = t_ms
        out.append(("bolus.late", data))
    else:
        data["reason"] = "clock"
        out.append(("bolus.skipped", data))
    return out
