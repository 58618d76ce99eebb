"""Clinician commands: the clock, therapy stop/resume, maintenance, a bench motor run, the alarm
test, ack, the plan and calibration read back (status: App.cmd_status, resident; the log's pages:
pumpcore.logpages).

Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Every function takes the App
and works through its public interface. Programming the pump (plans, refills, calibration, power-on
restore) is in pumpcore.program, which also loads the plan rules.
"""

from . import alarms as al
from . import proto
from .delivery import ConstRate


def clock_set(app, args, now, req_id):
    for k in ("epoch_s", "offset_s", "next_change_epoch_s", "next_offset_s"):
        v = args.get(k)
        if v is None and k in ("epoch_s", "offset_s"):
            raise proto.CommandError(proto.BAD_ARGS, "%s must be an integer" % k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or abs(v) > 1 << 40):
            raise proto.CommandError(proto.BAD_ARGS, "%s must be an integer" % k)
    if abs(args["offset_s"]) > 14 * 3600:
        raise proto.CommandError(proto.BAD_ARGS, "offset_s must be within +-14 h")
    src = app.halt(now)
    slots = src is not None and src is app.sched
    if slots:
        app.settle_slots(now)  # the periodic slots the old clock reached, recorded before it changes
    app.clock.set(now, args["epoch_s"], args["offset_s"], args.get("next_change_epoch_s"),
                   args.get("next_offset_s"))
    if slots:
        app.settle_slots(now)  # the slots it jumped over: given late or skipped, with an event
    app.clear_alarm(al.CLOCK, now)
    app.log_event("clock.set", {"epoch_s": args["epoch_s"], "offset_s": args["offset_s"]}, now)
    app.save_state(now)
    return clock_get(app, args, now, req_id)


def therapy_stop(app, args, now, req_id):
    app.stop_motor(now)
    app.bench = None
    if app.therapy == "running":
        app.therapy = "stopped"
        app.log_event("therapy.stopped", {}, now)
    app.save_state(now)
    return {"therapy": app.therapy}


def maintenance(app, args, now, req_id):
    """Stop therapy for maintenance (flashing, inspection): an event, the MAINTENANCE alarm
    (non-critical: a clinician is at the pump; its condition lasts until therapy resumes),
    and Ctrl-C interrupts the firmware from now until therapy.resume or the next reset
    (App._kbd_sync)."""
    app.stop_motor(now)
    app.bench = None
    was = app.therapy
    if app.therapy == "running":
        app.therapy = "stopped"
    app.maint = True
    app.log_event("maintenance", {"therapy": was}, now)
    app.raise_alarm(al.MAINTENANCE, now)
    app.save_state(now)
    return {"therapy": app.therapy, "repl": True}


def _leave_guard(app, now):
    """A clinician leaves the boot-loop guard's safe state: the crash count starts again."""
    from . import fault

    if not fault.guarded(app):
        return False
    fault.clear(app.store)
    app.therapy = "stopped"
    app.safe_reason = None
    app.clear_alarm(al.FAULT, now)
    app.log_event("fault.cleared", {}, now)
    return True


def therapy_resume(app, args, now, req_id):
    if _leave_guard(app, now):
        from . import alarmlist

        alarmlist.ack(app.alarms, al.FAULT)
    if app.therapy == "safe":
        raise proto.CommandError(proto.SAFE_STATE, "in the safe state (%s): program a plan"
                                 % app.safe_reason)
    if app.plan is None:
        raise proto.CommandError(proto.THERAPY_STOPPED, "no plan: program one first")
    app.bench = None
    app.delivery.rebase(now)
    app.therapy = "running"
    app.maint = False  # Ctrl-C is data again (App._kbd_sync)
    app.clear_alarm(al.MAINTENANCE, now)
    app.log_event("therapy.resumed", {}, now)
    app.save_state(now)
    return {"therapy": app.therapy}


def motor_run(app, args, now, req_id):
    steps = args["steps"]
    rate = args.get("rate_nl_day") or app.pullin_nl_day()
    if app.therapy == "running":
        # not BUSY (try again later): it cannot succeed until a clinician stops therapy
        raise proto.CommandError(proto.THERAPY_RUNNING, "stop therapy first (therapy.stop)")
    if not isinstance(steps, int) or steps < 1 or steps > 10_000_000:
        raise proto.CommandError(proto.BAD_ARGS, "steps must be 1..10000000")
    if not isinstance(rate, int) or rate < 1 or rate > app.limits()["max_nl_day"]:
        raise proto.CommandError(proto.BAD_ARGS, "rate_nl_day must be 1..%d"
                                 % app.limits()["max_nl_day"])
    app.stop_motor(now)
    app.delivery.rebase(now, 0)
    app.bench = [ConstRate(rate), steps]
    return {"steps": steps, "rate_nl_day": rate}


def alarm_test(app, args, now, req_id):
    app.alarms.alarm_test(now)
    app.next_tone_ms = now
    app.log_event("alarm.test", {}, now)
    return {}


def ack(app, args, now, req_id):
    kind = args.get("kind")
    if kind is not None and kind not in al.KINDS:
        raise proto.CommandError(proto.BAD_ARGS, "unknown alarm kind %s" % kind)
    stalled = app.alarms.condition_active(al.STALL)
    if kind is None or kind == al.FAULT:
        _leave_guard(app, now)  # therapy stays stopped until therapy.resume
    from . import alarmlist

    done = alarmlist.ack(app.alarms, kind)
    if stalled and (al.STALL in done or kind is None):
        # acknowledging a stall is the clinician's "retry": the motor runs again, and
        # STALL_RETRIES more stalled segments raise it again
        app.retry_after_stall(now)
    if al.BATTERY_FAULT in done or kind is None:
        if app.fallback and app.battery.avg_mv is not None and \
                app.battery.avg_mv > app.battery.brownout_mv:
            app.battery.clear_fault()
            app.fallback = False
            app.delivery.rebase(now)
    app.next_tone_ms = now
    app.dirty = True
    return {"acked": done}


def plan_get(app, args, now, req_id):
    # with the therapy state it runs in: a client compares all of it, not the CRC alone
    return {"plan": app.plan, "plan_crc": app.plan_crc(), "gen": app.gen,
            "therapy": app.therapy, "activity": app.sched.activity(now)
            if app.sched is not None else "none"}


def clock_get(app, args, now, req_id):
    c = app.clock
    return {"epoch_s": app.epoch(now),
            "offset_s": c.offset_ms_at(c.epoch_ms_at(now)) // 1000, "set": c.valid}


def alarms(app, args, now, req_id):
    from . import alarmlist

    return {"alarms": alarmlist.to_list(app.alarms)}


def calib_get(app, args, now, req_id):
    return {"step_pl": app.step_pl}
