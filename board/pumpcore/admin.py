"""The App's rarely used half: clinician commands, the patient bolus, the `log` pages and
reading the records at power-on.

App.call() imports this module for one command and, on MicroPython, drops it again after
(App._overlay, App._shed): its bytecode (about 9 KB of heap on the 64-bit unix port, half
that on a board) stays out of the running pump's heap. It must not leave anything behind that refers
to it (no functions or classes of its own in App state), or the module would stay alive.
Every function takes the App as its first argument and works on it as its methods would.
"""

from . import alarms as al
from . import canon, dose, proto
from .app import ConstRate
from .schedule import Clock, Schedule
from .store import CorruptRecord

_LOG_BUDGET = 800  # bytes of events in one `log` answer (a frame is at most 1024 bytes)


def _plan_invalid(e, prefix=""):
    return proto.CommandError(proto.PLAN_INVALID, "%s%s: %s" % (prefix, e.field, e.reason))


def load_therapy(app, now):
    """Restore the therapy records at power-on (App._load)."""
    st = app.store
    try:
        rec = st.load("plan")
        state = st.load("state")
        count = st.load("count")
    except CorruptRecord as e:
        app._safe(now, "therapy record corrupt (%s)" % e.name, al.MEMORY)
        return
    try:
        if count is not None:
            app.steps = count["steps"]
            app.delivery.owed = count["owed"]
            app.reservoir.volume_nl = count["volume_nl"]
            app.pl_left = count["pl_left"]
        if state is not None:
            # The plan is paused while the power is off: every board-ms instant moves by
            # the downtime. The last instant known for sure is where the count record left
            # the account (owed is integrated up to count["t_ms"]): resuming the schedule
            # there neither replays (doubles) nor skips any part of it, e.g. a bolus in
            # progress continues where its account stopped.
            ref = state["saved_ms"]
            if count is not None and count.get("t_ms") is not None:
                ref = count["t_ms"]
            delta = now - ref
            app.clock = Clock.from_dict(state["clock"])
            app.clock.base_ms += delta
            rtc = app.board.wall_epoch_s()
            if rtc is not None and app.clock.valid:
                app.clock.rebase(now, rtc)
            app.reservoir.low_nl = state["res"]["low_nl"]
            app.reservoir.empty_nl = state["res"]["empty_nl"]
            app.reservoir.refill_by_epoch_s = state["res"]["refill_by_epoch_s"]
            app.reservoir.refilled_epoch_s = state["res"]["refilled_epoch_s"]
            app.alarms.restore(state["alarms"])
            app.battery.restore(state["battery"])
            app.boluses = [t + delta for t in state["boluses"]]
            app.lockout_until_ms = state["lockout_until_ms"] + delta
            app.last_bolus = state["last_bolus"]
            app.fallback = state["fallback"]
            app._auth_restore = state.get("auth")
            was = state["therapy"]
            if rec is not None and rec.get("plan") is not None:
                from . import plan as planmod

                app.plan = planmod.validate(rec["plan"], app.limits())
                app.sched = Schedule(app.plan, app.clock, 0, app._pullin_nl_day())
                app.sched.load_dict(state["sched"])
                app.sched.shift(delta)
            if was == "running" and app.plan is not None:
                app.therapy = "running"
                app.alarms.raise_(al.RESET, app.clock.epoch_s(now))
            elif was == "safe":
                app.therapy = "safe"
                app.safe_reason = state.get("safe_reason")
    except (KeyError, TypeError, ValueError):  # PlanError is a ValueError
        app._safe(now, "therapy record unreadable", al.MEMORY)
        return
    app.delivery.rebase(now)


def plan_set(app, args, now, req_id):
    from . import plan as planmod

    try:
        new = planmod.validate(args["plan"], app.limits())
    except planmod.PlanError as e:
        raise _plan_invalid(e) from None
    # everything checked: from here on the new plan is applied whole
    app._stop_motor(now)
    src = app._source(now)
    if src is not None:
        app.delivery.advance(now, src)
    app.delivery.drop_fraction()
    app.delivery.rebase(now)
    app.plan = new
    app.sched = Schedule(new, app.clock, now, app._pullin_nl_day())
    app.reservoir.set_thresholds(new["reservoir"]["low_nl"], new["reservoir"]["empty_nl"])
    rbd = new["reservoir"]["refill_by_days"]
    r = app.reservoir
    if rbd and r.refill_by_epoch_s is None and r.refilled_epoch_s is not None:
        r.refill_by_epoch_s = r.refilled_epoch_s + rbd * 86_400  # drug stability
    app.bench = None
    if app.therapy == "safe" and app.alarms.condition_active(al.MEMORY):
        app._clear(al.MEMORY, now)
    if app.alarms.condition_active(al.STALL):
        retry_after_stall(app, now)
    app.therapy = "running"
    app.safe_reason = None
    p = new["patient"]
    app.lockout_until_ms = now + p["lockout_s"] * 1000 if p else 0
    app.store.save("plan", {"plan": new})
    app._event("plan.changed", {"plan_crc": app.plan_crc(), "mode": new["basal"]["kind"]},
                now)
    app.save_state(now)
    return {"plan": new, "plan_crc": app.plan_crc()}


def refill(app, args, now, req_id):
    vol = args["volume_nl"]
    conc = args.get("conc_ng_ml")
    if not isinstance(vol, int) or vol <= 0 or vol > app.cfg["reservoir_nl"]:
        raise proto.CommandError(proto.BAD_ARGS, "volume_nl must be 1..%d"
                                 % app.cfg["reservoir_nl"])
    if conc is not None and (not isinstance(conc, int) or conc <= 0):
        raise proto.CommandError(proto.BAD_ARGS, "conc_ng_ml must be a positive integer")
    app._stop_motor(now)
    src = app._source(now)
    if src is not None:
        app.delivery.advance(now, src)
    ep = app.epoch(now)
    rb = args.get("refill_by_epoch_s")
    if rb is None and app.plan and app.plan["reservoir"]["refill_by_days"] and ep is not None:
        rb = ep + app.plan["reservoir"]["refill_by_days"] * 86_400
    app.reservoir.refill(vol, ep, rb)
    app.pl_left = 0
    bridge_nl = 0
    if conc is not None and app.plan is not None and conc != app.plan["conc_ng_ml"]:
        old = app.plan["conc_ng_ml"]
        new = dict(app.plan)
        new["conc_ng_ml"] = conc
        from . import plan as planmod

        try:
            new = planmod.validate(new, app.limits())
        except planmod.PlanError as e:
            raise _plan_invalid(e) from None
        sd = app.sched.to_dict()
        app.plan = new
        app.sched = Schedule(new, app.clock, now, app._pullin_nl_day())
        app.sched.load_dict(sd)
        bridge_nl = app.cfg.get("pump_path_nl", 0) + new["catheter_nl"]
        if bridge_nl:
            app.sched.start_bridge(now, old, bridge_nl)
        app.store.save("plan", {"plan": new})
    if app.plan and app.plan["patient"]:
        app.lockout_until_ms = now + app.plan["patient"]["lockout_s"] * 1000
    for k in (al.LOW, al.EMPTY, al.REFILL_BY):
        app._clear(k, now)
    app._event("refill", {"volume_nl": vol, "conc_ng_ml": conc, "bridge_nl": bridge_nl}, now)
    app.save_state(now)
    return {"reservoir_nl": vol, "bridge_nl": bridge_nl}


def calib_set(app, args, now, req_id):
    v = args["step_pl"]
    if not isinstance(v, int) or v < 1_000 or v > 100_000_000:
        raise proto.CommandError(proto.BAD_ARGS, "step_pl must be 1000..100000000 pL")
    if app.plan is not None:
        lim = {"max_nl_day": app.max_hz * 86_400 * v // 1000,
               "reservoir_nl": app.cfg["reservoir_nl"]}
        from . import plan as planmod

        try:
            planmod.validate(app.plan, lim)
        except planmod.PlanError as e:
            raise _plan_invalid(e, "the running plan would break: ") from None
    app._stop_motor(now)
    src = app._source(now)
    if src is not None:
        app.delivery.advance(now, src)
    app.step_pl = v
    app.delivery.set_step_pl(v)
    if app.sched is not None:
        app.sched.pullin_nl_day = app._pullin_nl_day()
    app.store.save("calib", {"step_pl": v})
    if app.therapy == "safe" and app.safe_reason and "calibration" in app.safe_reason:
        app.therapy = "stopped"
        app.safe_reason = None
        app._clear(al.MEMORY, now)
    app._event("calibrated", {"step_pl": v}, now)
    app.save_state(now)
    return {"step_pl": v}


def clock_set(app, args, now, req_id):
    for k in ("epoch_s", "offset_s", "next_change_epoch_s", "next_offset_s"):
        v = args.get(k)
        if v is not None and (not isinstance(v, int) or abs(v) > 1 << 40):
            raise proto.CommandError(proto.BAD_ARGS, "%s must be an integer" % k)
    if abs(args["offset_s"]) > 14 * 3600:
        raise proto.CommandError(proto.BAD_ARGS, "offset_s must be within +-14 h")
    app._stop_motor(now)
    src = app._source(now)
    if src is not None:
        app.delivery.advance(now, src)
    app.clock.set(now, args["epoch_s"], args["offset_s"], args.get("next_change_epoch_s"),
                   args.get("next_offset_s"))
    app._clear(al.CLOCK, now)
    app._event("clock.set", {"epoch_s": args["epoch_s"], "offset_s": args["offset_s"]}, now)
    app.save_state(now)
    return clock_get(app, args, now, req_id)


def therapy_stop(app, args, now, req_id):
    app._stop_motor(now)
    app.bench = None
    if app.therapy == "running":
        app.therapy = "stopped"
        app._event("therapy.stopped", {}, now)
    app.save_state(now)
    return {"therapy": app.therapy}


def therapy_resume(app, args, now, req_id):
    if app.therapy == "safe":
        raise proto.CommandError(proto.SAFE_STATE, "in the safe state (%s): program a plan"
                                 % app.safe_reason)
    if app.plan is None:
        raise proto.CommandError(proto.THERAPY_STOPPED, "no plan: program one first")
    app.bench = None
    app.delivery.rebase(now)
    app.therapy = "running"
    app._event("therapy.resumed", {}, now)
    app.save_state(now)
    return {"therapy": app.therapy}


def motor_run(app, args, now, req_id):
    steps = args["steps"]
    rate = args.get("rate_nl_day") or app._pullin_nl_day()
    if app.therapy == "running":
        raise proto.CommandError(proto.BUSY, "stop therapy first (therapy.stop)")
    if not isinstance(steps, int) or steps < 1 or steps > 10_000_000:
        raise proto.CommandError(proto.BAD_ARGS, "steps must be 1..10000000")
    if not isinstance(rate, int) or rate < 1 or rate > app.limits()["max_nl_day"]:
        raise proto.CommandError(proto.BAD_ARGS, "rate_nl_day must be 1..%d"
                                 % app.limits()["max_nl_day"])
    app._stop_motor(now)
    app.delivery.rebase(now)
    app.delivery.owed = 0
    app.bench = [ConstRate(rate), steps]
    return {"steps": steps, "rate_nl_day": rate}


def alarm_test(app, args, now, req_id):
    app.alarms.alarm_test(now)
    app.next_tone_ms = now
    app._event("alarm.test", {}, now)
    return {}


def load_keys(app):
    try:
        import json

        f = open(app.store.path("keys.json"))
        try:
            return json.loads(f.read())
        finally:
            f.close()
    except (OSError, ValueError):
        return {}


def ack(app, args, now, req_id):
    kind = args.get("kind")
    if kind is not None and kind not in al.KINDS:
        raise proto.CommandError(proto.BAD_ARGS, "unknown alarm kind %s" % kind)
    stalled = app.alarms.condition_active(al.STALL)
    done = app.alarms.ack(kind)
    if stalled and (al.STALL in done or kind is None):
        # acknowledging a stall is the clinician's "retry": the motor runs again, and
        # STALL_RETRIES more stalled segments raise it again
        retry_after_stall(app, now)
    if al.BATTERY_FAULT in done or kind is None:
        if app.fallback and app.battery.avg_mv is not None and \
                app.battery.avg_mv > app.battery.brownout_mv:
            app.battery.clear_fault()
            app.fallback = False
            app.delivery.rebase(now)
    app.next_tone_ms = now
    app._dirty = True
    return {"acked": done}


def clock_get(app, args, now, req_id):
    c = app.clock
    return {"epoch_s": app.epoch(now),
            "offset_s": c.offset_ms_at(c.epoch_ms_at(now)) // 1000, "set": c.valid}


def bolus(app, args, now, req_id):
    lb = app.last_bolus
    if lb is not None and lb[0] == req_id:
        return lb[1]  # a retry, possibly across a reset: answered, never dosed again
    p = app.plan["patient"] if app.plan else None
    if p is None:
        _refuse(app, now, "no patient bolus in this plan")
        raise proto.CommandError(proto.BOLUS_NOT_ALLOWED, "the plan has no patient bolus")
    if app.therapy != "running" or app._source(now) is not app.sched:
        why = halted_reason(app)
        _refuse(app, now, why)
        raise proto.CommandError(proto.THERAPY_STOPPED, "no bolus now: " + why)
    if now < app.lockout_until_ms:
        left = (app.lockout_until_ms - now + 59_999) // 60_000
        _refuse(app, now, "lockout")
        raise proto.CommandError(proto.LOCKOUT, "in lockout for %d more min" % left)
    if app._boluses_24h(now) >= p["max_24h"]:
        _refuse(app, now, "max per 24 h")
        raise proto.CommandError(proto.MAX_24H, "%d boluses in the last 24 h: the maximum"
                                 % p["max_24h"])
    app._stop_motor(now)
    app.delivery.advance(now, app.sched)
    nl = dose.ng_to_nl(p["ng"], app.sched.conc_at(now))
    app.sched.prune(now)
    app.sched.add_bolus(now, nl, p["dur_s"] * 1000)
    app.boluses.append(now)
    app.lockout_until_ms = now + p["lockout_s"] * 1000
    res = {"dose_ng": p["ng"], "volume_nl": nl, "dur_s": p["dur_s"],
           "started_epoch_s": app.epoch(now)}
    app.last_bolus = [req_id, res]
    app._event("bolus.started", {"dose_ng": p["ng"], "volume_nl": nl}, now)
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
    app._event("bolus.refused", {"reason": why}, now)


def load(app, now):
    st = app.store
    cal_bad = False
    try:
        cal = st.load("calib")
        if cal is not None:
            app.step_pl = cal["step_pl"]
            app.delivery.set_step_pl(app.step_pl)
    except (CorruptRecord, KeyError, TypeError):
        cal_bad = True
    try:
        # only scans the file (next seq, line count, torn lines dropped): no events in RAM
        app.events.restore()
    except (CorruptRecord, OSError):
        pass
    try:
        load_therapy(app, now)
    finally:
        # after the therapy records: restoring them must not bring back "running" (or
        # drop the MEMORY alarm) when the calibration failed its check
        if cal_bad:
            app._safe(now, "calibration record corrupt", al.MEMORY)


def log(app, args, now, req_id):
    since = args.get("since", 0)
    limit = args.get("limit", 20)
    if not isinstance(since, int) or not isinstance(limit, int) or limit < 1 or limit > 50:
        raise proto.CommandError(proto.BAD_ARGS, "since >= 0 and limit 1..50")
    # streamed from the log file; with the budget it parses no more lines than fit
    evs, nxt = app.events.since(since, limit, _LOG_BUDGET)
    # the answer must fit one frame (proto.MAX_LINE): stop early, `next` says where
    size = 0
    for i in range(len(evs)):
        size += len(canon.dumps(evs[i])) + 1
        if size > _LOG_BUDGET and i > 0:
            nxt = evs[i]["seq"]
            evs = evs[:i]
            break
    return {"events": evs, "next": nxt}


def retry_after_stall(app, now):
    app.stall_count = 0
    app._clear(al.STALL, now)
    app.delivery.rebase(now)
