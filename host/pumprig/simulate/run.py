"""One simulated run: program the plan on a virtual rig in warp mode, advance the world's clock
day by day, carry out the scenario (refills, patient bolus requests, faults, clock changes) at
its times, and compare the pulses the world logged with the ideal.

What the report calls delivered comes from the world's own step log (the side channel), never
from the firmware's account; the ideal comes from `oracle.Oracle`.
"""

from __future__ import annotations

import bisect
import datetime as dt
import shutil
import time
from dataclasses import dataclass, field

from pumpcore import plan as core
from pumpcore.schedule import DAY_MS, Clock

from ..errors import PumprigError, SimError
from ..tz import next_offset_change, offset_fn
from .oracle import Oracle, StepError

# Alarms after which delivery stops, so the ideal is no longer what the rig should deliver.
_STOPPING = ("EMPTY", "EOS", "STALL", "OCCLUSION", "BATTERY_FAULT")
# Board values until the rig tells them in hello (issue 16): the pull-in rate of a prime and
# the pump path's dead volume.
_PULLIN_STEP_HZ = 50
_PUMP_PATH_NL = 200_000


@dataclass
class RunOptions:
    """What to simulate: the plan and what happens around it (all plain data)."""

    plan: dict
    days: int
    fill_nl: int
    start_epoch_s: int
    tz: str | None = None
    scenario: dict = field(default_factory=dict)
    boluses_s: list[int] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    step_pl: int | None = None


def simulate(plan: dict, days: int, fill_nl: int, start_epoch_s: int, tz: str | None = None,
             scenario: dict | None = None, boluses_s: list[int] | None = None,
             faults: list[dict] | None = None, rig=None, progress=None, step_pl=None) -> dict:
    """Run `plan` for `days` on a virtual rig in warp mode and return the report dict.
    `rig`: an open virtual rig to use (else a throwaway one is started and stopped);
    `progress(done_days, days)` is called after each simulated day."""
    opts = RunOptions(plan, days, fill_nl, start_epoch_s, tz, scenario or {}, boluses_s or [],
                      faults or [], step_pl)
    return run(opts, rig=rig, progress=progress)


def run(opts: RunOptions, rig=None, progress=None) -> dict:
    t_wall = time.monotonic()
    own = rig is None
    home = None
    if own:
        rig, home = open_rig()
    try:
        world = rig.world
        world.set_warp(True)
        world.set_epoch(opts.start_epoch_s)
        cli = connect(rig.link, home)
        try:
            r = _Run(cli, world, opts, relogin=lambda: _relogin(cli))
            r.program()
            for day in range(opts.days):
                r.day(day)
                if progress:
                    progress(day + 1, opts.days)
            return r.report(time.monotonic() - t_wall)
        finally:
            cli.close()
    finally:
        if own:
            rig.stop()
            shutil.rmtree(home, ignore_errors=True)


def open_rig():
    """A throwaway blank virtual rig in warp mode running the .mpy firmware as `pumprig flash`
    installs it, and the PUMPRIG_HOME folder its keys went to: (rig, home)."""
    import tempfile

    from ..virtual.rig import open_rig as open_virtual_rig

    home = tempfile.mkdtemp(prefix="pumprig-sim-home-")
    try:
        return open_virtual_rig(warp=True, home=home), home
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise


def connect(link, home):
    """A clinician session with the firmware on a virtual rig that may still be starting
    (the virtual rig's one connect-and-retry policy)."""
    from ..virtual.link import connect as connect_virtual

    return connect_virtual(link, home=home)


def _relogin(cli, tries=100):
    """Log in again after the rig restarted (a power cut): its session is gone."""
    last = None
    for _ in range(tries):
        try:
            cli.handshake()
            return
        except PumprigError as e:
            last = e
            time.sleep(0.02)
    raise SimError(f"the firmware did not answer after the power came back: {last}")


def _tz_offsets(tz_name, epoch_s):
    """(offset_s now, next change epoch_s or 0, offset after it)."""
    if not tz_name:
        return 0, 0, 0
    offset_at = offset_fn(tz_name)
    nxt = next_offset_change(offset_at, epoch_s)
    off = offset_at(epoch_s)
    return (off, nxt[0], nxt[1]) if nxt else (off, 0, off)


class _Run:
    """The state of one run. `program` once, then `day` for each day, then `report`."""

    def __init__(self, cli, world, opts: RunOptions, relogin):
        self.cli = cli
        self.world = world
        self.o = opts
        self.relogin = relogin
        self.per_day: list[dict] = []
        self.alarms: list[dict] = []
        self.events: list[dict] = []
        self.boluses = {"given": 0, "refused": 0, "refusals": []}
        self.ideal_valid_until = None  # world ms after which therapy was interrupted
        self.powered = True
        self.local_segs: dict = {}  # with --tz: the world's segments, for the local days
        self.last_status: dict = {}

    # --- before the first day ---------------------------------------------------------------

    def program(self):
        cli, world, o = self.cli, self.world, self.o
        self.t0 = world.status()["time_ms"]
        if o.step_pl is not None:
            cli.calib_set(o.step_pl)
        hello = cli.info
        self.step = hello.get("step_pl") or cli.calib_get()["step_pl"]
        self.limits = hello.get("limits", {})
        cap = self.limits.get("reservoir_nl")
        if cap and o.fill_nl > cap:
            raise PumprigError(f"--fill {o.fill_nl / 1e6:g} mL is more than the rig's "
                               f"{cap / 1e6:g} mL reservoir")
        pullin = hello.get("pullin_step_hz", _PULLIN_STEP_HZ) * 86_400 * self.step // 1000
        off, nxt_change, nxt_off = _tz_offsets(o.tz, o.start_epoch_s)
        cli.therapy_stop()
        cli.clock_set(o.start_epoch_s, off, nxt_change or None, nxt_off if nxt_change else None)
        self.clock = Clock()
        self.clock.set(self.t0, o.start_epoch_s, off, nxt_change, nxt_off)
        cli.refill(o.fill_nl)
        self.seg_since = len(world.segments())
        cli.plan_set(o.plan)
        self.program_ms = world.status()["time_ms"]
        dead_nl = o.plan["catheter_nl"] + self.limits.get("pump_path_nl", _PUMP_PATH_NL)
        self.oracle = Oracle(o.plan, self.program_ms, self.clock, self.step, pullin, dead_nl)
        self.err = StepError(self.oracle, self.step)
        self.log_since = _drain_log(cli, 0)[1]
        self.actions = self._timeline(nxt_change)
        self.ai = 0
        self.end_ms = self.program_ms + o.days * DAY_MS
        self.prev_steps = world.measure()["pulses_fwd"]
        self.prev_ideal = 0

    def _timeline(self, nxt_change):
        """The host's actions in world ms, in time order: (ms, kind, data)."""
        p, o = self.program_ms, self.o
        actions = [(p + ev["at_s"] * 1000, "scenario", ev) for ev in o.scenario.get("events", [])]
        actions += [(p + s * 1000, "bolus", {}) for s in o.boluses_s]
        for f in o.faults:
            actions.append((p + f["at_s"] * 1000, "fault", f))
            if f.get("for_s"):
                actions.append((p + (f["at_s"] + f["for_s"]) * 1000, "unfault", f))
        if nxt_change:
            actions.append((self.t0 + (nxt_change - o.start_epoch_s) * 1000, "dst", None))
        actions.sort(key=lambda a: a[0])
        return actions

    # --- during the run ---------------------------------------------------------------------

    def catch_up(self, t_ms):
        """Check every pulse the world logged up to t_ms against the ideal, before the oracle
        moves past t_ms (a bolus, a refill)."""
        segs = self.world.segments(self.seg_since)
        for sg in segs:
            self.err.add(sg)
            if self.o.tz:
                self.local_segs[sg["index"]] = sg  # a newer copy (aborted since) replaces it
        # the last segment may still run (or be aborted later): fetch it again next time
        if segs:
            self.seg_since = segs[-1]["index"]
        horizon = t_ms if self.ideal_valid_until is None else min(t_ms, self.ideal_valid_until)
        if self.err.o.t_ms <= horizon:
            self.err.run_until(horizon * 1000)
            self.err.check_lag(horizon * 1000)

    def act(self, kind, data):
        now_ms = self.world.status()["time_ms"]
        self.catch_up(now_ms)
        if kind == "bolus" or (kind == "scenario" and data.get("bolus")):
            self._bolus(now_ms)
        elif kind == "scenario":
            conc = data.get("conc_ng_ml")
            self.cli.refill(data["refill_nl"], conc)
            self.oracle.refill(now_ms, conc)
        elif kind == "fault":
            self._fault(data, True)
            if self.ideal_valid_until is None:
                self.ideal_valid_until = now_ms
        elif kind == "unfault":
            self._fault(data, False)
        elif kind == "dst":
            self._clock_change(now_ms)

    def _bolus(self, now_ms):
        try:
            r = self.cli.bolus()
            self.oracle.add_bolus(now_ms, r["volume_nl"], r["dur_s"] * 1000)
            self.boluses["given"] += 1
        except PumprigError as e:
            self.boluses["refused"] += 1
            self.boluses["refusals"].append({"at_s": (now_ms - self.program_ms) // 1000,
                                             "reason": getattr(e, "code", str(e)),
                                             "message": getattr(e, "detail", str(e))})

    def _fault(self, f, on):
        w, k = self.world, f["kind"]
        if k == "stall":
            w.fault(stall=on)
        elif k == "occlusion":
            w.fault(occlusion=on)
        elif k == "battery":
            if on:
                w.fault(battery_mv=f["mv"])
            else:
                w.fault(clear_battery=True)  # battery_mv=None would leave it forced
        elif k == "power":
            if on:
                w.power_cut()
                self.powered = False
            if not on or not f.get("for_s"):
                w.power_on()
                self.powered = True
                self.relogin()  # the rig restarted: its session is gone

    def _clock_change(self, now_ms):
        self.oracle.advance(now_ms)  # integrate up to now on the clock as it was
        ep = self.clock.epoch_s(now_ms)
        off, nxt_change, nxt_off = _tz_offsets(self.o.tz, ep + 1)
        self.cli.clock_set(ep, off, nxt_change or None, nxt_off if nxt_change else None)
        self.clock.set(now_ms, ep, off, nxt_change, nxt_off)
        if nxt_change:
            self.actions.append((now_ms + (nxt_change - ep) * 1000, "dst", None))
            self.actions.sort(key=lambda a: a[0])

    def day(self, day):
        """Carry out the actions of day `day` (0-based), then record the day."""
        day_end = self.program_ms + (day + 1) * DAY_MS
        while self.ai < len(self.actions) and self.actions[self.ai][0] <= day_end:
            at, kind, data = self.actions[self.ai]
            self.ai += 1
            self.world.advance(to_ms=at)
            self.act(kind, data)
        self.world.advance(to_ms=day_end)
        m = self.world.measure()
        evs = []
        if self.powered:  # a rig without power answers nothing
            self.last_status = self.cli.status()
            # the log is read only when an event was logged since the last read (a `log` loads
            # its code on the rig for the call: most days of a steady plan log nothing)
            if self.last_status.get("log_next", self.log_since + 1) != self.log_since:
                evs, self.log_since = _drain_log(self.cli, self.log_since)
        self.events.extend(evs)
        day_alarms = []
        for e in evs:
            if e["kind"] == "alarm.raised":
                a = {"kind": e["data"]["kind"], "critical": e["data"].get("critical", False),
                     "at_s": self._at_s(e)}
                self.alarms.append(a)
                day_alarms.append(a["kind"])
                # EMPTY (on_empty=stop), EOS, stall and occlusion end the ideal
                if a["kind"] in _STOPPING and self.ideal_valid_until is None:
                    self.ideal_valid_until = self.program_ms + a["at_s"] * 1000
        self.catch_up(day_end)
        steps = m["pulses_fwd"]
        ideal_nl = self.oracle.ideal_nl(day_end)
        st = self.last_status
        day_steps = steps - self.prev_steps
        vol_nl = day_steps * self.step // 1000
        self.per_day.append({
            "day": day + 1,
            "date": dt.datetime.fromtimestamp(self.o.start_epoch_s + (day + 1) * 86_400,
                                              dt.timezone.utc).date().isoformat(),
            "steps": day_steps, "volume_nl": vol_nl,
            "dose_ng": core.nl_to_ng(vol_nl, self.oracle.plan["conc_ng_ml"]),
            "ideal_nl": ideal_nl - self.prev_ideal,
            "cumulative_steps": steps,
            "delivered_out_nl": m["volume_out_nl"],
            "reservoir_nl": st.get("reservoir_nl"), "battery_mv": m["battery_mv"],
            "battery_state": st.get("battery_state"), "alarms": day_alarms,
            "boluses_given": sum(1 for e in evs if e["kind"] == "bolus.started"),
            "boluses_refused": sum(1 for e in evs if e["kind"] == "bolus.refused"),
            "powered": self.powered,
        })
        self.prev_steps, self.prev_ideal = steps, ideal_nl

    def _at_s(self, ev):
        if ev.get("epoch_s") is not None:
            return ev["epoch_s"] - self.o.start_epoch_s
        return (ev["ms"] - self.program_ms) // 1000

    # --- after the last day -----------------------------------------------------------------

    def report(self, wall_s) -> dict:
        o, world, step = self.o, self.world, self.step
        if not self.powered:  # a power cut that lasts past the end: power on to read it out
            world.power_on()
            self.powered = True
            self.relogin()
        total_steps = world.measure()["pulses_fwd"]
        delivered_nl = total_steps * step // 1000
        # the firmware's account against the world's pulses: after power cuts the account may
        # have counted the segments in flight, which its uncertainty bounds
        st = self.cli.status()
        account = st["delivered_steps"]
        uncertain_nl = st.get("uncertain_nl") or 0
        uncertain_steps = uncertain_nl * 1000 // step
        low = next((a for a in self.alarms if a["kind"] == "LOW"), None)
        empty = next((a for a in self.alarms if a["kind"] == "EMPTY"), None)
        segs = world.segments(0)
        report = {
            "plan_crc": core.crc(o.plan), "drug": o.plan["drug"], "days": o.days,
            "start": dt.datetime.fromtimestamp(o.start_epoch_s, dt.timezone.utc).isoformat(),
            "tz": o.tz, "fill_nl": o.fill_nl, "step_pl": step,
            "delivered_steps": total_steps, "delivered_ml": round(delivered_nl / 1e6, 6),
            "ideal_ml": round(self.oracle.ideal_nl(self.end_ms) / 1e6, 6),
            "account_steps": account, "uncertain_ml": round(uncertain_nl / 1e6, 6),
            "account_ok": account - uncertain_steps <= total_steps <= account,
            "max_step_error": self.err.value(),
            "error_checked_until_s":
                ((self.ideal_valid_until or self.end_ms) - self.program_ms) // 1000,
            "alarms": self.alarms,
            "low_at_s": low["at_s"] if low else None,
            "low_volume_ml": _volume_left_ml(segs, o.fill_nl, step, self.program_ms, low),
            "empty_at_s": empty["at_s"] if empty else None,
            "empty_volume_ml": _volume_left_ml(segs, o.fill_nl, step, self.program_ms, empty),
            "low_ml": o.plan["reservoir"]["low_nl"] / 1e6,
            "empty_ml": o.plan["reservoir"]["empty_nl"] / 1e6,
            "boluses": self.boluses, "per_day": self.per_day,
            "bolus_times_s": [
                self._at_s(e) for e in self.events if e["kind"] == "bolus.started"],
            "faults": [_fault_outcome(f, self.events, self._at_s) for f in o.faults],
            "battery_mv": self.per_day[-1]["battery_mv"] if self.per_day else None,
            "battery_state": st.get("battery_state"),
            "limits": self.limits, "wall_s": round(wall_s, 3),
        }
        if o.tz:
            report["per_local_day"] = _per_local_day(
                list(self.local_segs.values()), o.tz, o.start_epoch_s, self.t0, self.program_ms,
                self.end_ms, step, self.oracle.plan["conc_ng_ml"])
        return report


def _fault_outcome(f: dict, events: list[dict], at_s) -> dict:
    """A fault and what the firmware did about it: the alarms it raised from the fault's start
    to a day after its end, how long after its start the first came, and (for a stall) the
    stalled segments it counted."""
    start = f["at_s"]
    end = start + (f.get("for_s") or 0) + 86_400
    seen = [e for e in events if start <= at_s(e) <= end]
    out = dict(f)
    raised = [e for e in seen if e["kind"] == "alarm.raised"]
    out["alarms"] = [e["data"]["kind"] for e in raised]
    # how long after the fault began the firmware raised its first alarm (s, None: no alarm)
    out["alarm_after_s"] = round(at_s(raised[0]) - start) if raised else None
    out["stall_episodes"] = sum(1 for e in seen if e["kind"] == "stall")
    out["restarts"] = sum(1 for e in seen if e["kind"] == "reset")
    return out


def _per_local_day(segs, tz, start_epoch_s, t0, program_ms, end_ms, step, conc):
    """Pulses the world made in each whole local day (midnight to midnight on the --tz clock,
    23, 24 or 25 hours) between programming and the end of the run."""
    from zoneinfo import ZoneInfo

    z = ZoneInfo(tz)

    def world_us(local_date):
        e = dt.datetime(local_date.year, local_date.month, local_date.day, tzinfo=z).timestamp()
        return (t0 + (int(e) - start_epoch_s) * 1000) * 1000

    d = dt.datetime.fromtimestamp(start_epoch_s + (program_ms - t0) // 1000, z).date()
    dates, bounds = [], []
    while True:
        d += dt.timedelta(days=1)
        b = world_us(d)
        if b > end_ms * 1000:
            break
        dates.append(d)
        bounds.append(b)
    cum = [0] * len(bounds)  # pulses strictly before each midnight
    for sg in segs:
        n = sg["made"] if sg["made"] is not None else sg["count"]
        if not n:
            continue
        first = sg["start_us"] + sg["first_us"]
        iv = sg["interval_us"]
        last = first + (n - 1) * iv
        for k in range(bisect.bisect_right(bounds, first), len(bounds)):
            b = bounds[k]
            cum[k] += n if b > last else (b - first - 1) // iv + 1
    out = []
    for k in range(len(bounds) - 1):
        steps = cum[k + 1] - cum[k]
        nl = steps * step // 1000
        out.append({"date": dates[k].isoformat(),
                    "hours": (bounds[k + 1] - bounds[k]) // 3_600_000_000,
                    "steps": steps, "volume_nl": nl, "dose_ng": core.nl_to_ng(nl, conc)})
    return out


def _volume_left_ml(segs, fill_nl, step, program_ms, alarm):
    """Reservoir left when an alarm sounded, from the world's pulses up to that instant."""
    if alarm is None:
        return None
    t_us = (program_ms + alarm["at_s"] * 1000) * 1000 + 999_999
    pulses = 0
    for s in segs:
        n = s["made"] if s["made"] is not None else s["count"]
        first = s["start_us"] + s["first_us"]
        if t_us < first or n == 0:
            continue
        pulses += min(n, (t_us - first) // s["interval_us"] + 1)
    return round((fill_nl - pulses * step // 1000) / 1e6, 4)


def _drain_log(cli, since):
    out = []
    while True:
        r = cli.log(since=since, limit=50)
        evs = r.get("events", [])
        out.extend(evs)
        nxt = r.get("next", since)
        if not evs or nxt == since:
            return out, nxt
        since = nxt
