"""The `status` answer: the pump's state for a client, live to the pulse. Per call
(pumpcore.loader; the rule: docs/architecture.md, "Memory"), a module of its own: the command
sent most often loads only this.
"""

from . import proto
from .app import FIRMWARE


def _live_volume_nl(app, now):
    v = app.reservoir.volume_nl
    if app.seg is not None:
        v -= (app.pulses_done(now) * app.step_pl + app.pl_left) // 1000
    return v if v > 0 else 0


def _live_steps(app, now):
    if app.seg is None:
        return app.steps
    return app.steps - app.seg[1] + app.pulses_done(now)


def _rate_now(app, now):
    src = app.source(now)
    return src.rate_nl_day(now) if src is not None else 0


def status(app, args, now, req_id):
    ep = app.epoch(now)
    rate = _rate_now(app, now)
    vol = _live_volume_nl(app, now)
    low_ep = None
    if ep is not None and rate > 0:
        s = app.reservoir.seconds_to(app.reservoir.low_nl, rate)
        low_ep = ep + s if s is not None else None
    mode = "none"
    if app.bench is not None:
        mode = "bench"
    elif app.sched is not None:
        mode = app.sched.activity(now)
    # keyword names are interned (qstrs); "quoted" keys of 10 characters or more would each
    # be a string object of ~70 bytes in the resident heap
    return dict(
        firmware=FIRMWARE, protocol=proto.PROTOCOL_VERSION,
        board=app.cfg.get("board", "?"), mode=mode, therapy=app.therapy,
        safe_reason=app.safe_reason, rate_nl_day=rate, reservoir_nl=vol,
        delivered_steps=_live_steps(app, now),
        delivered_nl=_live_steps(app, now) * app.step_pl // 1000,
        step_pl=app.step_pl, battery_mv=app.battery.avg_mv,
        battery_state=app.battery.state, fallback=app.fallback,
        alarms=app.alarms.active(), plan_crc=app.plan_crc(),
        drug=app.plan["drug"] if app.plan else None,
        conc_ng_ml=app.plan["conc_ng_ml"] if app.plan else None,
        epoch_s=ep, ms=now, low_epoch_s=low_ep,
        refill_by_epoch_s=app.reservoir.refill_by_epoch_s,
        lockout_until_epoch_s=app.clock.epoch_s(app.lockout_until_ms)
        if app.clock.valid and app.lockout_until_ms > now else None,
        boluses_24h=app.boluses_24h(now),
        eri_days_left=app.battery.eri_days_left(ep),
        stall_detect=getattr(app.board, "stall_detect", None), gen=app.gen,
        uncertain_nl=app.limiter.uncertain_nl,
    )
