"""The patient's bolus request: checked against the plan, the lockout and the 24 h maximum,
then added to the schedule (a bolus's windows with the motor's ramp, which pumpcore.planning uses for a
plan's start too). Loaded for the call (App._overlay) and dropped after it, like
pumpcore.clinician; a module of its own so that a bolus loads only this.
"""

from . import alarms as al
from . import const, dose, proto
from .dose import bolus_rate_nl_day

_DAY_MS = const(86_400_000)
RAMP_STAGES = const(4)
RAMP_STAGE_MS = const(100)


def bolus(app, args, now, req_id):
    # [req_id, answer] of each bolus of the last 24 h, oldest first (one per app.boluses entry:
    # both are appended together and app.boluses only loses its oldest)
    lb = app.last_bolus
    n = app.boluses_24h(now)
    if len(lb) > n:
        del lb[:len(lb) - n]
    for r in lb:
        if r[0] == req_id:
            return r[1]  # a retry, possibly across a reset: answered, never dosed again
    p = app.plan["patient"] if app.plan else None
    if p is None:
        _refuse(app, now, "no patient bolus in this plan")
        raise proto.CommandError(proto.BOLUS_NOT_ALLOWED, "the plan has no patient bolus")
    if app.therapy != "running" or app.source(now) is not app.sched:
        why = halted_reason(app)
        _refuse(app, now, why)
        raise proto.CommandError(proto.THERAPY_STOPPED, "no bolus now: " + why)
    if now < app.lockout_until_ms:
        left = (app.lockout_until_ms - now + 59_999) // 60_000
        _refuse(app, now, "lockout")
        raise proto.CommandError(proto.LOCKOUT, "in lockout for %d more min" % left)
    if app.boluses_24h(now) >= p["max_24h"]:
        _refuse(app, now, "max per 24 h")
        raise proto.CommandError(proto.MAX_24H, "%d boluses in the last 24 h: the maximum"
                                 % p["max_24h"])
    app.halt(now)  # the schedule drives delivery (checked above)
    nl = dose.ng_to_nl(p["ng"], app.sched.conc_at(now))
    app.sched.prune(now)
    add_bolus(app.sched, now, nl, p["dur_s"] * 1000)
    app.boluses.append(now)
    app.bolus_halted = False  # until delivery halts during it (App._drive)
    app.lockout_until_ms = now + p["lockout_s"] * 1000
    res = {"dose_ng": p["ng"], "volume_nl": nl, "dur_s": p["dur_s"],
           "started_epoch_s": app.epoch(now)}
    lb.append([req_id, res])
    app.log_event("bolus.started", {"dose_ng": p["ng"], "volume_nl": nl}, now)
    app.save_state(now)
    return res


def halted_reason(app):
    """Why the schedule is not what drives the motor now (for refusals)."""
    if app.therapy == "safe":
        return "safe state (%s)" % app.safe_reason
    if app.therapy != "running":
        return "therapy is stopped"
    if app.bench is not None:
        return "a bench run is in progress"
    if app.occluded:
        return "occlusion: delivery is halted"
    if app.battery.eos:
        return "battery at end of service"
    if app.alarms.condition_active(al.STALL):
        return "motor stall: acknowledge to retry"
    if app.reservoir.level() == "empty":
        return "reservoir empty: refill first"
    if app.fallback:
        return "battery fault: running at the minimum rate"
    return "delivery is halted"


def _refuse(app, now, why):
    app.log_event("bolus.refused", {"reason": why}, now)


def bolus_windows(start_ms, nl, rate_nl_day, pullin_nl_day=0):
    """Windows [(start_ms, end_ms, rate_nl_day)] delivering `nl` at `rate_nl_day`.

    A rate above the motor's pull-in rate starts with a ramp of RAMP_STAGES stages of
    RAMP_STAGE_MS each (acceleration); the full-rate window is then shortened so the bolus
    volume is unchanged (to within rate x 1 ms).
    """
    out = []
    t = start_ms
    left = nl * _DAY_MS  # nL x ms/day still to deliver
    if pullin_nl_day and rate_nl_day > pullin_nl_day:
        for k in range(RAMP_STAGES):
            r = pullin_nl_day + (rate_nl_day - pullin_nl_day) * k // RAMP_STAGES
            if r * RAMP_STAGE_MS >= left:
                break
            out.append((t, t + RAMP_STAGE_MS, r))
            left -= r * RAMP_STAGE_MS
            t += RAMP_STAGE_MS
    if left > 0 and rate_nl_day > 0:
        dur = (left + rate_nl_day // 2) // rate_nl_day
        if dur < 1:
            dur = 1
        out.append((t, t + dur, rate_nl_day))
    return out


def add_bolus(sched, t_ms, nl, dur_ms):
    wins = bolus_windows(t_ms, nl, bolus_rate_nl_day(nl, dur_ms), sched.pullin_nl_day)
    sched.overlays.extend(wins)
    return wins
