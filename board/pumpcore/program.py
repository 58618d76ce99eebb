"""Programming the pump: plans, refills (with a new concentration), calibration, and restoring
all of it from the records at power-on. Loaded for one call, like pumpcore.admin (App._overlay).
Plans are checked by App.check_plan, which loads the plan rules for the check alone: plan.set
arrives here with its plan checked, so the rules and this module are never in the heap together
for the largest call. Every check comes before the first change: a refused command changes
nothing.
"""

from . import alarms as al
from . import proto
from .schedule import Clock, Schedule
from .store import CorruptRecord


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
                if count is not None:
                    app.sched.load_slots(count.get("slots"))  # newer than the state's
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
    # checked by App.check_plan before this module was loaded (the two are never in the heap
    # together): from here on the new plan is applied whole
    new = args["plan"]
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
        app._retry_after_stall(now)
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
    ep = app.epoch(now)
    rb = args.get("refill_by_epoch_s")
    if rb is not None and (not isinstance(rb, int) or isinstance(rb, bool) or
                           (ep is not None and rb <= ep)):
        raise proto.CommandError(proto.BAD_ARGS, "refill_by_epoch_s must be a time in the future")
    new = None
    if conc is not None and app.plan is not None and conc != app.plan["conc_ng_ml"]:
        new = dict(app.plan)
        new["conc_ng_ml"] = conc
        new = app.check_plan(new)  # before any change: refused, the refill changes nothing
    app._stop_motor(now)
    src = app._source(now)
    if src is not None:
        app.delivery.advance(now, src)
    if rb is None and app.plan and app.plan["reservoir"]["refill_by_days"] and ep is not None:
        rb = ep + app.plan["reservoir"]["refill_by_days"] * 86_400
    app.reservoir.refill(vol, ep, rb)
    app.pl_left = 0
    bridge_nl = 0
    if new is not None:
        old = app.plan["conc_ng_ml"]
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
        app.check_plan(app.plan, lim, "the running plan would break: ")
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
