"""Restoring the records at power-on: the set the head names (pumpcore.store.Store.commit),
each record of the generation the head gives it. Loaded once, at boot (App._overlay), and
dropped after it like pumpcore.program, which programs the pump; the two are never in the
heap together (a board has room for one of them with a plan in it).
"""

import gc

from . import alarms as al
from . import loader
from .schedule import Clock, Schedule
from .store import CorruptRecord

_RECORDS = ("calib", "plan", "state", "count")


def load(app, now):
    """Restore the records at power-on (App.__init__): the set the head names (Store.commit),
    each of the generation the head gives it. A blank board (no head, no record) starts empty;
    a record missing, unreadable or of another generation is corruption: MEMORY alarm, safe
    state. Returns the login throttle of the state record ([failures, ms left, ceiling ms
    left]) for the App to give its Server, or None."""
    from . import evlog

    st = app.store
    try:
        # only scans the file (next seq, line count, torn lines dropped): no events in RAM
        app.events.load(evlog.restore(app.events))
    except (CorruptRecord, OSError):
        pass
    evlog = None
    _forget()  # the records are decoded where the scan's code was, below the free heap
    try:
        head = st.load("head")
        gens = head["gens"]
        app.gen = head["gen"]
        app.gens = gens
    except (CorruptRecord, KeyError, TypeError):
        from . import evlog

        if not evlog.any_record(st, _RECORDS + ("head",)):
            return  # a blank board: nothing was ever committed
        app.enter_safe(now, "therapy record corrupt (head)", al.MEMORY)
        return
    cal_bad = False
    try:
        cal = _load_gen(st, "calib", gens["calib"])
        app.step_pl = cal["step_pl"]
        app.delivery.set_step_pl(app.step_pl)
    except (CorruptRecord, KeyError, TypeError):
        cal_bad = True
    try:
        return load_therapy(app, now)
    finally:
        # after the therapy records: restoring them must not bring back "running" (or
        # drop the MEMORY alarm) when the calibration failed its check
        if cal_bad:
            app.enter_safe(now, "calibration record corrupt", al.MEMORY)


def _forget():
    """Drop the per-call modules loaded so far (this one too: its running functions keep what
    they use) and collect: what loads next takes their place (a board's heap, loader.DROP)."""
    if loader.DROP:
        loader.drop()
    gc.collect()


def _load_gen(st, name, gen):
    """evlog.load_gen(st, name, gen), with evlog loaded only when the record is not the one the
    head names (a committed name.new, or corruption): the common case needs no module."""
    rec = st.load(name)
    if isinstance(rec, dict) and rec.get("gen") == gen:
        return rec
    from . import evlog

    return evlog.load_gen(st, name, gen)


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
    """Restore the therapy records at power-on (load); returns the state record's login
    throttle, or None."""
    st = app.store
    gens = app.gens
    auth = None
    try:
        rec = _load_gen(st, "plan", gens["plan"]) if "plan" in gens else None
        state = _load_gen(st, "state", gens.get("state"))
        count = _load_gen(st, "count", gens.get("count"))
    except CorruptRecord as e:
        app.enter_safe(now, "therapy record corrupt (%s)" % e.name, al.MEMORY)
        return
    try:
        r = app.reservoir
        if count is not None:
            app.steps = count["steps"]
            app.delivery.rebase(now, count["owed"])
            r.set_fill(count["volume_nl"], r.refilled_epoch_s, r.refill_by_epoch_s)
            app.pl_left = count["pl_left"]
            from . import limitline

            app.limiter.load(limitline.restore(app.limiter, count, now,
                                               app.board.wall_epoch_s()))
            del limitline
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
            c = state["clock"]
            c["base_ms"] += delta
            app.clock = Clock.from_dict(c)
            rtc = app.board.wall_epoch_s()
            if rtc is not None and app.clock.valid:
                app.clock.rebase(now, rtc)
            res = state["res"]
            r.set_thresholds(res["low_nl"], res["empty_nl"])
            r.set_fill(r.volume_nl, res["refilled_epoch_s"], res["refill_by_epoch_s"])
            from . import alarmlist

            app.alarms.load(alarmlist.restore(state["alarms"]))
            del alarmlist
            from . import batterystate

            app.battery.load(batterystate.restore(app.battery, state["battery"]))
            del batterystate
            app.boluses = [t + delta for t in state["boluses"]]
            app.lockout_until_ms = state["lockout_until_ms"] + delta
            lb = state["last_bolus"] or []
            app.last_bolus = [lb] if lb and isinstance(lb[0], str) else lb  # older: one pair
            app.fallback = state["fallback"]
            auth = state.get("auth")
            app.last_req = state["req"]
            was = state["therapy"]
            why = state.get("safe_reason")
            sd = state["sched"]
            plan = rec.get("plan") if rec is not None else None
            # Finding 8 (issue 11): the records' decoding leaves garbage, and the schedule's
            # code is loaded next; the heap is collected first, with the state record and
            # the plan record's wrapper dropped. The plan is not checked against the plan
            # rules again (that module is the largest): it was checked when programmed,
            # and its record passed its CRC and carries the head's generation.
            state = rec = c = res = None
            # limitline, alarmlist, batterystate: planning loads in the heap they took
            _forget()
            if plan is not None:
                from . import planning

                # the state record's schedule moved by the downtime (the count record's slots
                # are newer than the state's)
                sd = planning.state(plan, sd, 0, count.get("slots") if count is not None
                                    else None, delta)  # fmt: skip
                app.plan = plan
                app.sched = Schedule(plan, app.clock, 0, app.pullin_nl_day(), app.steps, None, sd)
            if was == "running" and app.plan is not None:
                app.therapy = "running"
                app.alarms.raise_(al.RESET, app.clock.epoch_s(now))
            elif was == "safe":
                app.therapy = "safe"
                app.safe_reason = why
    except (KeyError, TypeError, ValueError):  # PlanError is a ValueError
        app.enter_safe(now, "therapy record unreadable", al.MEMORY)
        return None
    app.delivery.rebase(now)
    return auth
