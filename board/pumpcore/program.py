"""Programming the pump: plans, refills (with a new concentration), calibration (restoring
them at power-on is pumpcore.restore). Loaded for one call, like pumpcore.clinician (App._overlay).
Plans are checked by App.check_plan, which loads the plan rules for the check alone: plan.set
arrives here with its plan checked, so the rules and this module are never in the heap together
for the largest call. Every check comes before the first change: a refused command changes
nothing.
"""

from . import alarms as al
from . import canon, dose, proto
from .schedule import Schedule


def _replay(app, key, plan_set):
    """The committed answer if `key` ("id command CRC-of-the-arguments", of the checked plan
    for plan.set) is the last plan.set/refill's: a retry, after a reset too (the server's
    cache is gone then), is answered, never applied again. None otherwise."""
    lr = app.last_req
    if lr is None or lr[0] != key:
        return None
    res = dict(lr[1])
    if plan_set:
        res["plan"] = app.plan
    return res


def plan_set(app, args, now, req_id):
    req_id = "%s plan.set %s" % (req_id, dose.crc(args["plan"]))
    res = _replay(app, req_id, True)
    if res is not None:
        return res
    if "calib" not in app.gens:
        # the set lost its calibration (a head rebuilt after corruption): the plan would run
        # on the board's default step volume
        raise proto.CommandError(proto.SAFE_STATE, "no calibration record: send calib.set first")
    # checked by App.check_plan before this module was loaded (the two are never in the heap
    # together): from here on the new plan is applied whole
    new = args["plan"]
    app.halt(now)
    app.delivery.drop_fraction()
    app.delivery.rebase(now)
    app.plan = new
    old = app.sched
    st = new["start"]
    # the line still holds the old bridges (a prime pushes them out)
    keep = old.bridges if old is not None and (st is None or st["kind"] != "prime") else None
    app.sched = Schedule(new, app.clock, now, app.pullin_nl_day(), app.steps, keep)
    app.limiter.new_plan(new, app.cfg.get("pump_path_nl", 0))
    app.reservoir.set_thresholds(new["reservoir"]["low_nl"], new["reservoir"]["empty_nl"])
    rbd = new["reservoir"]["refill_by_days"]
    r = app.reservoir
    if rbd and r.refill_by_epoch_s is None and r.refilled_epoch_s is not None:
        # drug stability
        r.set_fill(r.volume_nl, r.refilled_epoch_s, r.refilled_epoch_s + rbd * 86_400)
    app.bench = None
    if app.therapy == "safe" and app.alarms.condition_active(al.MEMORY):
        app.clear_alarm(al.MEMORY, now)
    if app.alarms.condition_active(al.STALL):
        app.retry_after_stall(now)
    app.therapy = "running"
    app.safe_reason = None
    p = new["patient"]
    app.lockout_until_ms = now + p["lockout_s"] * 1000 if p else 0
    crc = app.plan_crc()
    # the request id and its answer are committed with the plan (a retry after a reset is
    # answered from them: App.call)
    app.last_req = [req_id, {"plan_crc": crc}]  # the request's key, committed with it
    app.save_state(now, ("plan",))
    app.log_event("plan.changed", {"plan_crc": crc, "mode": new["basal"]["kind"]}, now)
    return {"plan": new, "plan_crc": crc}


def refill(app, args, now, req_id):
    req_id = "%s refill %s" % (req_id, canon.digest(args))
    res = _replay(app, req_id, False)
    if res is not None:
        return res
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
    app.halt(now)
    if rb is None and app.plan and app.plan["reservoir"]["refill_by_days"] and ep is not None:
        rb = ep + app.plan["reservoir"]["refill_by_days"] * 86_400
    app.reservoir.refill(vol, ep, rb)
    app.pl_left = 0
    bridge_nl = 0
    if new is not None:
        from . import planning

        sd = app.sched.to_dict()
        bridge_nl = app.cfg.get("pump_path_nl", 0) + new["catheter_nl"]
        if bridge_nl:
            # the old drug fills the line behind any older one still in it: each is dosed at
            # its strength until the steps pushed have moved it out of the tip
            sd["bridges"] = planning.add_bridge(sd["bridges"], app.steps, app.plan["conc_ng_ml"],
                                                (bridge_nl * 1000 + app.step_pl - 1) // app.step_pl)
        app.plan = new
        app.sched = Schedule(new, app.clock, now, app.pullin_nl_day(), app.steps, None,
                             planning.state(new, sd, now))
    if app.plan and app.plan["patient"]:
        app.lockout_until_ms = now + app.plan["patient"]["lockout_s"] * 1000
    for k in (al.LOW, al.EMPTY, al.REFILL_BY):
        app.clear_alarm(k, now)
    res = {"reservoir_nl": vol, "bridge_nl": bridge_nl}
    app.last_req = [req_id, res]  # the request's key, committed with it
    # reservoir, account, schedule (the bridge), plan (the concentration) and the request id
    # in one commit: a power cut leaves the refill whole or not begun
    app.save_state(now, ("plan",) if new is not None else ())
    app.log_event("refill", {"volume_nl": vol, "conc_ng_ml": conc, "bridge_nl": bridge_nl}, now)
    return res


def calib_set(app, args, now, req_id):
    v = args["step_pl"]
    if not isinstance(v, int) or v < 1_000 or v > 100_000_000:
        raise proto.CommandError(proto.BAD_ARGS, "step_pl must be 1000..100000000 pL")
    if app.plan is not None:
        lim = app.limits()
        lim["max_nl_day"] = app.max_hz * 86_400 * v // 1000
        app.check_plan(app.plan, lim, "the running plan would break: ")
    app.halt(now)
    app.step_pl = v
    app.delivery.set_step_pl(v)
    if app.sched is not None:
        app.sched.pullin_nl_day = app.pullin_nl_day()
    if app.therapy == "safe" and app.safe_reason and "calibration" in app.safe_reason:
        app.therapy = "stopped"
        app.safe_reason = None
        app.clear_alarm(al.MEMORY, now)
    app.save_state(now, ("calib",))
    app.log_event("calibrated", {"step_pl": v}, now)
    return {"step_pl": v}
