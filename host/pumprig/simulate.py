"""Months of therapy in seconds: the real firmware on a virtual rig, with the clock warped.

`simulate(plan, ...)` starts (or attaches to) a virtual rig in warp mode, programs the plan over
the protocol, and advances the world's clock day by day, issuing the scenario's refills, patient
bolus requests and faults at their times. What it reports as delivered comes from the world's
own step log (the side channel), never from the firmware's account; the ideal comes from the
plan (pumpcore.schedule, driven by the host from the plan and the accepted boluses).

Over the run it checks, at every pulse, how far the measured cumulative steps are from the
ideal cumulative volume divided by the step size: `max_step_error`.
"""

from __future__ import annotations

import bisect
import datetime as dt
import os
import re
import shutil
import sys
import time
from decimal import Decimal
from pathlib import Path

from pumpcore import plan as core
from pumpcore import planning
from pumpcore.dose import ng_to_nl
from pumpcore.schedule import DAY_MS, Clock, Schedule, bolus_rate_nl_day

from .errors import PumprigError, SimError
from .plans import parse_duration_s

BOARD_DIR = Path(__file__).resolve().parents[2] / "board"
FIRMWARE_FILES = ("main.py", "bootcheck.py", "bootsafe.py", "pumpcore", "hw", "boards")


# --- installing the firmware ---------------------------------------------------------------

def board_dir() -> Path:
    """The firmware sources: the repository's board/ (or PUMPRIG_BOARD_DIR)."""
    d = Path(os.environ.get("PUMPRIG_BOARD_DIR", BOARD_DIR))
    if not (d / "main.py").exists():
        raise PumprigError(f"firmware sources not found at {d}: set PUMPRIG_BOARD_DIR")
    return d


def install_firmware(fs: str | Path, src: Path | None = None) -> int:
    """Copy the firmware into a virtual rig's filesystem directly (what a flash would write).

    Used for throwaway rigs; `pumprig flash` is the user-facing path. Writes the manifest the
    boot check verifies (pumprig.flash.write_manifest). Returns files copied."""
    src = src or board_dir()
    fs = Path(fs)
    n = 0
    for name in FIRMWARE_FILES:
        s = src / name
        if s.is_dir():
            for f in s.rglob("*"):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".json"):
                    d = fs / f.relative_to(src)
                    d.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, d)
                    n += 1
        elif s.exists():
            shutil.copyfile(s, fs / name)
            n += 1
    from .flash import write_manifest

    write_manifest(fs)
    return n


# --- the ideal ------------------------------------------------------------------------------

# The documented rule for periodic boluses (docs/plans.md, "Time of day and daylight saving"),
# written here apart from the firmware's code so that the ideal is not the firmware judging itself.
LATE_MAX_MS = 3_600_000


class PeriodicIdeal:
    """The periodic boluses of the ideal, as windows in world ms.

    Slot T of local day d starts at the first instant at which the clock shows day d at T or
    later. If the clock jumps over T (an offset change) by at most LATE_MAX_MS, the bolus starts
    at the jump, whole; by more, it is not given. Each (day, slot) once, so a repeated hour
    repeats nothing; none before the basal starts. The clock is the host's (epoch, offset, one
    pending change), which simulate sets again at every change with the same time; windows are
    generated a couple of local days ahead of the time asked for.
    """

    def __init__(self, per, clock, basal_start_ms, conc_at, from_ms):
        self.ng = per["ng"]
        self.dur = per["dur_s"] * 1000
        self.times = [tm * 60_000 for tm in per["times_min"]]
        self.clock = clock
        self.basal = basal_start_ms
        self.conc_at = conc_at  # world ms -> ng/mL (the bridge after a refill)
        self.starts = []  # sorted
        self.day = clock.local_ms(from_ms) // DAY_MS - 1  # next local day to generate

    def _first_at(self, target):
        """World ms at which the clock first shows local ms `target` or later (None: it
        jumped over it by more than LATE_MAX_MS)."""
        c = self.clock
        e0 = c.epoch_ms - c.base_ms  # epoch ms = world ms + e0
        t1 = target - c.offset_s * 1000 - e0
        change = c.next_change_epoch_s * 1000
        if not change or t1 + e0 < change:
            return t1
        tc = change - e0
        t2 = target - c.next_offset_s * 1000 - e0
        if t2 >= tc:
            return t2
        late = change + c.next_offset_s * 1000 - target  # what the clock shows after the jump
        return tc if late <= LATE_MAX_MS else None

    def _generate(self, t_ms):
        want = self.clock.local_ms(t_ms) // DAY_MS + 2
        while self.day <= want:
            for T in self.times:
                s = self._first_at(self.day * DAY_MS + T)
                if s is not None and s >= self.basal:
                    bisect.insort(self.starts, s)
            self.day += 1

    def _rate(self, s):
        """At the concentration of its start (the old one while a refill's bridge lasts)."""
        return bolus_rate_nl_day(ng_to_nl(self.ng, self.conc_at(s)), self.dur)

    def rate_nl_day(self, t_ms):
        self._generate(t_ms)
        r = 0
        j = bisect.bisect_right(self.starts, t_ms) - 1
        while j >= 0 and self.starts[j] > t_ms - self.dur:
            r += self._rate(self.starts[j])
            j -= 1
        return r

    def next_change_ms(self, t_ms):
        self._generate(t_ms)
        i = bisect.bisect_right(self.starts, t_ms)
        best = self.starts[i] if i < len(self.starts) else None
        j = i - 1
        while j >= 0 and self.starts[j] > t_ms - self.dur:
            e = self.starts[j] + self.dur
            if best is None or e < best:
                best = e
            j -= 1
        return best


class _Ideal:
    """The oracle's rate as a schedule (what the bridge computation integrates): the base
    schedule's attributes, the oracle's rate."""

    def __init__(self, oracle):
        object.__setattr__(self, "_o", oracle)

    def rate_nl_day(self, t_ms):
        return self._o.rate_nl_day(t_ms)

    def next_change_ms(self, t_ms):
        return self._o.next_change_ms(t_ms)

    def __getattr__(self, name):
        return getattr(self._o.sched, name)

    def __setattr__(self, name, value):
        setattr(self._o.sched, name, value)


class Oracle:
    """The plan's ideal cumulative delivery, integrated exactly over world time.

    Mirrors only what the host itself asked for (plan, clock, accepted boluses, refills with a
    new concentration); the firmware's accounting plays no part. The basal, start, patient
    boluses and bridge come from pumpcore.schedule with the plan's periodic boluses left out;
    those come from PeriodicIdeal, the documented rule written apart.
    """

    def __init__(self, plan, program_ms, clock: Clock, step_pl: int, pullin_nl_day: int,
                 dead_nl: int):
        self.plan = plan
        self.clock = clock
        self.step_pl = step_pl
        self.pullin = pullin_nl_day
        self.dead_nl = dead_nl
        self.sched = Schedule(dict(plan, periodic=None), clock, program_ms, pullin_nl_day)
        self.periodic = None
        if plan.get("periodic"):
            self.periodic = PeriodicIdeal(plan["periodic"], clock, self.sched.basal_start_ms,
                                          self._conc_at, program_ms)
        self.t_ms = program_ms
        self.acc = 0  # nL/day x ms
        self.stopped_from = None  # world ms after which the ideal is no longer defined

    def _conc_at(self, t_ms):
        return self.sched.conc_at(t_ms)

    def rate_nl_day(self, t_ms):
        r = self.sched.rate_nl_day(t_ms)
        if self.periodic is not None:
            r += self.periodic.rate_nl_day(t_ms)
        return r

    def next_change_ms(self, t_ms):
        a = self.sched.next_change_ms(t_ms)
        if self.periodic is not None:
            b = self.periodic.next_change_ms(t_ms)
            if a is None or (b is not None and b < a):
                return b
        return a

    def advance(self, t_ms):
        t = self.t_ms
        while t < t_ms:
            nxt = self.next_change_ms(t)
            e = t_ms if nxt is None or nxt > t_ms else nxt
            self.acc += self.rate_nl_day(t) * (e - t)
            t = e
        self.t_ms = max(self.t_ms, t_ms)

    def acc_us(self, t_us):
        """Ideal volume in nL/day x µs at t_us (>= the oracle's integrated time)."""
        t_ms = t_us // 1000
        self.advance(t_ms)
        return self.acc * 1000 + self.rate_nl_day(t_ms) * (t_us - t_ms * 1000)

    def add_bolus(self, t_ms, nl, dur_ms):
        self.advance(t_ms)
        self.sched.prune(t_ms)
        planning.add_bolus(self.sched, t_ms, nl, dur_ms)

    def refill(self, t_ms, conc):
        if conc is None or conc == self.plan["conc_ng_ml"]:
            return
        self.advance(t_ms)
        old = self.plan["conc_ng_ml"]
        sd = self.sched.to_dict()
        self.plan = dict(self.plan, conc_ng_ml=conc)
        self.sched = Schedule(dict(self.plan, periodic=None), self.clock, 0, self.pullin)
        planning.load_dict(self.sched, sd)
        if self.dead_nl:
            planning.start_bridge(_Ideal(self), t_ms, old, self.dead_nl)

    def ideal_nl(self, t_ms):
        self.advance(t_ms)
        return self.acc // DAY_MS


class StepError:
    """Largest |measured steps - ideal steps| over every pulse instant of the world's log.

    Segments are fed as the world logs them; pulses are taken in time order up to a horizon,
    so a segment running past the end of a simulated day is finished the next day."""

    def __init__(self, oracle: Oracle, step_pl: int):
        self.o = oracle
        self.q = 86_400_000 * step_pl  # nL/day x µs per step
        self.steps = 0
        self.worst = 0  # in nL/day x µs
        self.worst_at_us = None
        self.pending = []  # [segment, next pulse index], in start order
        self.done_index = -1  # segments up to this index are fully checked

    def add(self, seg: dict):
        """A segment from the world's log; a newer copy of a pending one (it was aborted
        since, so `made` is now known) replaces it and keeps the position reached."""
        for p in self.pending:
            if p[0]["index"] == seg["index"]:
                p[0] = seg
                return
        if seg["index"] <= self.done_index:
            return  # fetched again but already checked to its end
        self.pending.append([seg, 0])

    def run_until(self, until_us: int):
        while self.pending:
            seg, i = self.pending[0]
            n = seg["made"] if seg["made"] is not None else seg["count"]
            base = seg["start_us"] + seg["first_us"]
            iv = seg["interval_us"]
            while i < n:
                t = base + i * iv
                if t > until_us:
                    self.pending[0][1] = i
                    return
                # pulses i..j-1 (up to the horizon) at one constant ideal rate: the error is
                # linear in the pulse index, so its extremes are at the first and last pulse
                j = n if iv == 0 else min(n, (until_us - base) // iv + 1)
                last_t = base + (j - 1) * iv
                nxt = self.o.next_change_ms(t // 1000)
                if j - i > 2 and (nxt is None or nxt * 1000 > last_t + 1000):
                    self._check(t, self.steps)
                    self._check(last_t, self.steps + (j - 1 - i))
                    self.steps += j - i
                    i = j
                    continue
                self._check(t, self.steps)
                self.steps += 1
                i += 1
            self.done_index = self.pending.pop(0)[0]["index"]

    def _check(self, t, k):
        """The k-th pulse (0-based count before it) happens at t µs."""
        a = self.o.acc_us(t)
        lag = a - k * self.q  # just before the pulse
        lead = (k + 1) * self.q - a  # just after it
        if lag > self.worst:
            self.worst, self.worst_at_us = lag, t
        if lead > self.worst:
            self.worst, self.worst_at_us = lead, t

    def check_lag(self, t_us: int):
        """No pulse at t: the count must still be within a step of the ideal."""
        lag = self.o.acc_us(t_us) - self.steps * self.q
        if lag > self.worst:
            self.worst, self.worst_at_us = lag, t_us

    def value(self) -> float:
        return round(self.worst / self.q, 4)


# --- scenario -------------------------------------------------------------------------------

_MAX_FAULT_S = 3650 * 86_400  # the longest simulation


def parse_fault(spec: str) -> dict:
    """'stall@30d', 'stall@30d:2h', 'occlusion@12h:30min', 'battery=3.2V@60d', 'power@45d'.
    Times are >= 0 and within 3650 days, durations > 0, a battery voltage 0.1-10 V (or mV);
    anything else is a PumprigError naming the spec."""
    try:
        what, when = spec.split("@", 1)
        dur = None
        if ":" in when:
            when, dur = when.split(":", 1)
        value = None
        if "=" in what:
            what, value = what.split("=", 1)
        kind = what.strip().lower()
        if kind not in ("stall", "occlusion", "battery", "power"):
            raise ValueError
        out = {"kind": kind, "at_s": _dur(when, "--fault"),
               "for_s": _dur(dur, "--fault") if dur is not None else None}
        if out["for_s"] is not None and out["for_s"] <= 0:
            raise ValueError
        if kind == "battery":
            v = Decimal(value.strip().lower().rstrip("v"))
            mv = int(v * 1000) if v < 100 else int(v)
            if not 100 <= mv <= 10_000:
                raise ValueError
            out["mv"] = mv
        elif value is not None:
            raise ValueError
        return out
    except (ValueError, AttributeError, TypeError, ArithmeticError, PumprigError):
        raise PumprigError(f"--fault {spec!r}: write KIND@TIME[:DURATION], e.g. stall@30d:2h, "
                           "occlusion@12h:30min, battery=3.2V@60d, power@45d (times from 0 "
                           "to 3650 days)") from None


_DUR = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(days|day|d|h|min|m|s)")
_DUR_S = {"days": 86_400, "day": 86_400, "d": 86_400, "h": 3600, "min": 60, "m": 60, "s": 1}


def _dur(text: str, field: str) -> int:
    """A time like 36h, 2d, 90min, 1.5 h: whole seconds, 0 to 3650 days (no sign, no nan or
    inf: PumprigError)."""
    t = str(text).strip().lower()
    m = _DUR.fullmatch(t)
    try:
        if m:
            v = int((Decimal(m.group(1)) * _DUR_S[m.group(2)]).to_integral_value())
        else:
            v = parse_duration_s(t, field)
    except (PumprigError, ArithmeticError):
        v = None
    if v is None or not 0 <= v <= _MAX_FAULT_S:
        raise PumprigError(f"{field}: cannot read the time {text!r} (use 36h, 2d, 90min; "
                           "0 to 3650 days)")
    return v


def load_bolus_file(path) -> list[int]:
    """One request time per line (36h, 2d 4h is not allowed: use 52h), '#' comments."""
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except OSError as e:
        raise PumprigError(f"{path}: cannot read the bolus file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise PumprigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    out = []
    for i, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(_dur(line, f"{path}:{i}"))
    return sorted(out)


# --- the run --------------------------------------------------------------------------------

def simulate(plan: dict, days: int, fill_nl: int, start_epoch_s: int, tz: str | None = None,
             scenario: dict | None = None, boluses_s: list[int] | None = None,
             faults: list[dict] | None = None, rig=None, progress=None, step_pl=None) -> dict:
    """Run `plan` for `days` on a virtual rig in warp mode and return the report dict."""
    from .client import Client
    from .virtual.rig import VirtualRig

    t_wall = time.monotonic()
    own = rig is None
    home = None
    if own:
        import tempfile

        home = tempfile.mkdtemp(prefix="pumprig-sim-home-")
        old_home = os.environ.get("PUMPRIG_HOME")
        os.environ["PUMPRIG_HOME"] = home
        try:
            rig = VirtualRig(blank=True, warp=True).start()
        finally:
            if old_home is None:
                os.environ.pop("PUMPRIG_HOME", None)
            else:
                os.environ["PUMPRIG_HOME"] = old_home
        install_firmware(rig.fs)
        rig.world.reset()
    try:
        world = rig.world
        world.set_warp(True)
        world.set_epoch(start_epoch_s)
        cli = _connect(Client, rig.link, home)
        try:
            return _run(cli, world, plan, days, fill_nl, start_epoch_s, tz, scenario or {},
                        boluses_s or [], faults or [], progress, t_wall, step_pl)
        finally:
            cli.close()
    finally:
        if own:
            rig.stop()
            shutil.rmtree(home, ignore_errors=True)


def _connect(Client, link, home, tries=100):
    last = None
    for _ in range(tries):
        try:
            c = Client(link, role="clinician", home=home, timeout=2.0)
            c.open()
            return c
        except PumprigError as e:
            last = e
            time.sleep(0.02)
    raise SimError(f"the firmware on the virtual rig did not answer: {last}")


def _tz_offsets(tz, epoch_s):
    """(offset_s now, next change epoch_s or 0, offset after it)."""
    if not tz:
        return 0, 0, 0
    from zoneinfo import ZoneInfo

    z = ZoneInfo(tz)
    t = dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc)
    off = int(t.astimezone(z).utcoffset().total_seconds())
    # find the next change within a year, to the second, by bisection on hours
    step = 3600
    s = epoch_s
    for _ in range(24 * 400):
        s += step
        o = int(dt.datetime.fromtimestamp(s, dt.timezone.utc).astimezone(z).utcoffset().total_seconds())
        if o != off:
            lo, hi = s - step, s
            while hi - lo > 1:
                mid = (lo + hi) // 2
                om = int(dt.datetime.fromtimestamp(mid, dt.timezone.utc).astimezone(z).utcoffset().total_seconds())
                if om == off:
                    lo = mid
                else:
                    hi = mid
            return off, hi, o
    return off, 0, off


def _run(cli, world, plan, days, fill_nl, start_epoch_s, tz, scenario, boluses_s, faults,
         progress, t_wall, step_pl):
    st0 = world.status()
    t0 = st0["time_ms"]
    if step_pl is not None:
        cli.calib_set(step_pl)
    hello = cli.info
    step = hello.get("step_pl") or cli.calib_get()["step_pl"]
    limits = hello.get("limits", {})
    cap = limits.get("reservoir_nl")
    if cap and fill_nl > cap:
        raise PumprigError(f"--fill {fill_nl / 1e6:g} mL is more than the rig's "
                           f"{cap / 1e6:g} mL reservoir")
    cfg_pullin = 50 * 86_400 * step // 1000
    off, nxt_change, nxt_off = _tz_offsets(tz, start_epoch_s)
    cli.therapy_stop()
    cli.clock_set(start_epoch_s, off, nxt_change or None, nxt_off if nxt_change else None)
    clock = Clock()
    clock.set(t0, start_epoch_s, off, nxt_change, nxt_off)
    cli.refill(fill_nl)
    seg_since = len(world.segments())
    cli.plan_set(plan)
    program_ms = world.status()["time_ms"]
    dead_nl = plan["catheter_nl"] + 200_000
    oracle = Oracle(plan, program_ms, clock, step, cfg_pullin, dead_nl)
    err = StepError(oracle, step)
    log_since = _drain_log(cli, 0)[1]

    # the timeline of host actions, in world ms
    actions = []
    for ev in scenario.get("events", []):
        actions.append((program_ms + ev["at_s"] * 1000, "scenario", ev))
    for s in boluses_s:
        actions.append((program_ms + s * 1000, "bolus", {}))
    for f in faults:
        actions.append((program_ms + f["at_s"] * 1000, "fault", f))
        if f.get("for_s"):
            actions.append((program_ms + (f["at_s"] + f["for_s"]) * 1000, "unfault", f))
    if nxt_change:
        actions.append((t0 + (nxt_change - start_epoch_s) * 1000, "dst", None))
    actions.sort(key=lambda a: a[0])

    end_ms = program_ms + days * DAY_MS
    per_day = []
    alarms = []
    boluses = {"given": 0, "refused": 0, "refusals": []}
    ideal_valid_until = None  # world ms after which therapy was interrupted (stop, fault)
    prev_steps = world.measure()["pulses_fwd"]
    prev_ideal = 0
    ai = 0
    events_all = []
    local_segs = {}  # with --tz: the world's segments, for the doses per local day

    def catch_up(t_ms):
        """Check every pulse the world logged up to t_ms against the ideal, before the
        oracle moves past t_ms (a bolus, a refill)."""
        nonlocal seg_since
        segs = world.segments(seg_since)
        for sg in segs:
            err.add(sg)
            if tz:
                local_segs[sg["index"]] = sg  # a newer copy (aborted since) replaces it
        # the last segment may still run (or be aborted later): fetch it again next time
        if segs:
            seg_since = segs[-1]["index"]
        horizon = t_ms if ideal_valid_until is None else min(t_ms, ideal_valid_until)
        if err.o.t_ms <= horizon:
            err.run_until(horizon * 1000)
            err.check_lag(horizon * 1000)
    for day in range(days):
        day_end = program_ms + (day + 1) * DAY_MS
        day_alarms = []
        while ai < len(actions) and actions[ai][0] <= day_end:
            at, kind, data = actions[ai]
            ai += 1
            world.advance(to_ms=at)
            now_ms = world.status()["time_ms"]
            catch_up(now_ms)
            if kind == "bolus" or (kind == "scenario" and data.get("bolus")):
                try:
                    r = cli.bolus()
                    oracle.add_bolus(now_ms, r["volume_nl"], r["dur_s"] * 1000)
                    boluses["given"] += 1
                except PumprigError as e:
                    boluses["refused"] += 1
                    boluses["refusals"].append({"at_s": (now_ms - program_ms) // 1000,
                                                "reason": getattr(e, "code", str(e)),
                                                "message": getattr(e, "detail", str(e))})
            elif kind == "scenario":
                conc = data.get("conc_ng_ml")
                cli.refill(data["refill_nl"], conc)
                oracle.refill(now_ms, conc)
            elif kind == "fault":
                _apply_fault(world, data, True)
                if ideal_valid_until is None:
                    ideal_valid_until = now_ms
            elif kind == "unfault":
                _apply_fault(world, data, False)
            elif kind == "dst":
                oracle.advance(now_ms)  # integrate up to now on the clock as it was
                ep = clock.epoch_s(now_ms)
                off, nxt_change, nxt_off = _tz_offsets(tz, ep + 1)
                cli.clock_set(ep, off, nxt_change or None, nxt_off if nxt_change else None)
                clock.set(now_ms, ep, off, nxt_change, nxt_off)
                if nxt_change:
                    actions.append((now_ms + (nxt_change - ep) * 1000, "dst", None))
                    actions.sort(key=lambda a: a[0])
        world.advance(to_ms=day_end)
        m = world.measure()
        evs, log_since = _drain_log(cli, log_since)
        events_all.extend(evs)
        for e in evs:
            if e["kind"] == "alarm.raised":
                a = {"kind": e["data"]["kind"], "critical": e["data"].get("critical", False),
                     "at_s": _at_s(e, start_epoch_s, program_ms)}
                alarms.append(a)
                day_alarms.append(a["kind"])
        # EMPTY with on_empty=stop, EOS, stall and occlusion end the ideal (delivery stops)
        for a in alarms:
            if a["kind"] in ("EMPTY", "EOS", "STALL", "OCCLUSION", "BATTERY_FAULT") \
                    and ideal_valid_until is None:
                ideal_valid_until = program_ms + a["at_s"] * 1000
        catch_up(day_end)
        steps = m["pulses_fwd"]
        ideal_nl = oracle.ideal_nl(day_end)
        st = cli.status()
        day_steps = steps - prev_steps
        vol_nl = day_steps * step // 1000
        per_day.append({
            "day": day + 1,
            "date": dt.datetime.fromtimestamp(start_epoch_s + (day + 1) * 86_400,
                                              dt.timezone.utc).date().isoformat(),
            "steps": day_steps, "volume_nl": vol_nl,
            "dose_ng": core.nl_to_ng(vol_nl, oracle.plan["conc_ng_ml"]),
            "ideal_nl": ideal_nl - prev_ideal,
            "cumulative_steps": steps,
            "delivered_out_nl": m["volume_out_nl"],
            "reservoir_nl": st["reservoir_nl"], "battery_mv": m["battery_mv"],
            "battery_state": st["battery_state"], "alarms": day_alarms,
            "boluses_given": sum(1 for e in evs if e["kind"] == "bolus.started"),
            "boluses_refused": sum(1 for e in evs if e["kind"] == "bolus.refused"),
        })
        prev_steps, prev_ideal = steps, ideal_nl
        if progress:
            progress(day + 1, days)
    total_steps = world.measure()["pulses_fwd"]
    delivered_nl = total_steps * step // 1000
    # the firmware's account against the world's pulses: after power cuts the account may
    # have counted the segments in flight, which its uncertainty bounds
    st = cli.status()
    account = st["delivered_steps"]
    uncertain_nl = st.get("uncertain_nl") or 0
    uncertain_steps = uncertain_nl * 1000 // step
    low = next((a for a in alarms if a["kind"] == "LOW"), None)
    empty = next((a for a in alarms if a["kind"] == "EMPTY"), None)
    report = {
        "plan_crc": core.crc(plan), "drug": plan["drug"], "days": days,
        "start": dt.datetime.fromtimestamp(start_epoch_s, dt.timezone.utc).isoformat(),
        "tz": tz, "fill_nl": fill_nl, "step_pl": step,
        "delivered_steps": total_steps, "delivered_ml": round(delivered_nl / 1e6, 6),
        "ideal_ml": round(oracle.ideal_nl(end_ms) / 1e6, 6),
        "account_steps": account, "uncertain_ml": round(uncertain_nl / 1e6, 6),
        "account_ok": account - uncertain_steps <= total_steps <= account,
        "max_step_error": err.value(),
        "error_checked_until_s": ((ideal_valid_until or end_ms) - program_ms) // 1000,
        "alarms": alarms,
        "low_at_s": low["at_s"] if low else None,
        "low_volume_ml": _volume_left_ml(world, fill_nl, step, program_ms, low),
        "empty_at_s": empty["at_s"] if empty else None,
        "empty_volume_ml": _volume_left_ml(world, fill_nl, step, program_ms, empty),
        "low_ml": plan["reservoir"]["low_nl"] / 1e6,
        "empty_ml": plan["reservoir"]["empty_nl"] / 1e6,
        "boluses": boluses, "per_day": per_day,
        "battery_mv": per_day[-1]["battery_mv"] if per_day else None,
        "battery_state": per_day[-1]["battery_state"] if per_day else None,
        "limits": limits, "wall_s": round(time.monotonic() - t_wall, 3),
    }
    if tz:
        report["per_local_day"] = _per_local_day(
            list(local_segs.values()), tz, start_epoch_s, t0, program_ms, end_ms, step,
            oracle.plan["conc_ng_ml"])
    return report


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


def _volume_left_ml(world, fill_nl, step, program_ms, alarm):
    """Reservoir left when an alarm sounded, from the world's pulses up to that instant."""
    if alarm is None:
        return None
    t_us = (program_ms + alarm["at_s"] * 1000) * 1000 + 999_999
    pulses = 0
    for s in world.segments(0):
        n = s["made"] if s["made"] is not None else s["count"]
        first = s["start_us"] + s["first_us"]
        if t_us < first or n == 0:
            continue
        pulses += min(n, (t_us - first) // s["interval_us"] + 1)
    return round((fill_nl - pulses * step // 1000) / 1e6, 4)


def _at_s(ev, start_epoch_s, program_ms):
    if ev.get("epoch_s") is not None:
        return ev["epoch_s"] - start_epoch_s
    return (ev["ms"] - program_ms) // 1000


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


def _apply_fault(world, f, on):
    k = f["kind"]
    if k == "stall":
        world.fault(stall=on)
    elif k == "occlusion":
        world.fault(occlusion=on)
    elif k == "battery":
        world.fault(battery_mv=f["mv"] if on else None)
    elif k == "power":
        if on:
            world.power_cut()
            if not f.get("for_s"):
                world.power_on()
        else:
            world.power_on()


# --- output ---------------------------------------------------------------------------------

def format_summary(r: dict) -> list[str]:
    d = lambda s: "-" if s is None else f"day {s / 86_400:.2f}"  # noqa: E731
    lines = [
        f"plan {r['plan_crc']} ({r['drug']}), {r['days']} days from {r['start']}"
        + (f" ({r['tz']})" if r.get("tz") else ""),
        f"delivered      {r['delivered_ml']:.4f} mL measured by the rig "
        f"(ideal {r['ideal_ml']:.4f} mL, {r['delivered_steps']} steps)",
        f"account        {r['account_steps']} steps, uncertain {r['uncertain_ml']:.4f} mL: "
        f"account - uncertain <= measured <= account "
        f"{'holds' if r['account_ok'] else 'FAILS'}",
        f"step error     at most {r['max_step_error']:.3f} step(s) over the run"
        f" (checked to {d(r['error_checked_until_s'])})",
        f"LOW            {d(r['low_at_s'])}"
        + (f" at {r['low_volume_ml']:.3f} mL left" if r["low_volume_ml"] is not None else ""),
        f"EMPTY          {d(r['empty_at_s'])}"
        + (f" at {r['empty_volume_ml']:.3f} mL left" if r["empty_volume_ml"] is not None else ""),
        f"battery        {r['battery_mv']} mV ({r['battery_state']})",
        f"boluses        {r['boluses']['given']} given, {r['boluses']['refused']} refused",
    ]
    for ref in r["boluses"]["refusals"][:10]:
        lines.append(f"  refused at {ref['at_s'] / 3600:.2f} h: {ref['reason']} {ref['message']}")
    if r["alarms"]:
        lines.append("alarms")
        for a in r["alarms"]:
            lines.append(f"  {a['kind']:<14} {'critical' if a['critical'] else 'non-critical':<12}"
                         f" {d(a['at_s'])}")
    lines.append(f"wall time      {r['wall_s']:.2f} s "
                 f"({r['days'] * 86_400 / max(r['wall_s'], 1e-9):,.0f} x real time)")
    return lines


def plot(r: dict, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [0] + [p["day"] for p in r["per_day"]]
    cum, ideal, c, i = [0.0], [0.0], 0, 0
    for p in r["per_day"]:
        c += p["volume_nl"]
        i += p["ideal_nl"]
        cum.append(c / 1e6)
        ideal.append(i / 1e6)
    res = [r["fill_nl"] / 1e6] + [p["reservoir_nl"] / 1e6 for p in r["per_day"]]
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    a1.plot(days, ideal, "--", color="grey", label="ideal (plan)")
    a1.plot(days, cum, color="tab:blue", label="measured by the rig")
    a1.set_ylabel("cumulative delivery (mL)")
    a1.legend(loc="upper left")
    a1.set_title(f"{r['drug']} plan {r['plan_crc']}: {r['days']} days, "
                 f"max step error {r['max_step_error']:.3f}")
    a2.plot(days, res, color="tab:green", label="reservoir (firmware)")
    a2.axhline(r.get("low_ml", 2.0), color="orange", ls=":", label="LOW")
    a2.axhline(r.get("empty_ml", 1.0), color="red", ls=":", label="EMPTY")
    a2.set_ylabel("reservoir (mL)")
    for a in r["alarms"]:
        x = a["at_s"] / 86_400
        for ax in (a1, a2):
            ax.axvline(x, color="red" if a["critical"] else "orange", alpha=0.4)
        a2.annotate(a["kind"], (x, max(res or [1]) * 0.35), rotation=90, fontsize=8,
                    ha="right")
    a2.legend(loc="upper right")
    a3.plot(days[1:], [p["battery_mv"] / 1000 for p in r["per_day"]], color="tab:purple")
    a3.set_ylabel("battery (V)")
    a3.set_xlabel("day")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def progress_bar(stream=sys.stderr):
    start = time.monotonic()

    def show(done, total):
        if not stream.isatty() and done != total and done % max(1, total // 10):
            return
        width = 30
        fill = width * done // total
        stream.write(f"\r  simulating [{'#' * fill}{'.' * (width - fill)}] day {done}/{total}"
                     f"  {time.monotonic() - start:.1f} s")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


# --- command line ---------------------------------------------------------------------------

def _start_epoch(text: str | None) -> int:
    if text is None:
        return int(dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    from .plans import parse_date

    return parse_date(text, "--start")


def add_parser(sub):
    sp = sub.add_parser(
        "simulate", help="run a plan for days or months on a virtual rig, in seconds",
        description="Run the real firmware on a virtual rig with its clock warped, and report "
                    "what the rig measured against the plan's ideal.")
    sp.add_argument("plan", metavar="PLAN.toml")
    sp.add_argument("--days", type=int, default=90, help="simulated days (default 90)")
    sp.add_argument("--fill", help='starting fill, e.g. "20 mL" (default: the plan file\'s, '
                                   'else the reservoir size)')
    sp.add_argument("--start", help="start date and time, UTC unless --tz (default 2027-01-01)")
    sp.add_argument("--tz", help="time zone of the pump's clock, e.g. Europe/Paris: flex "
                                 "schedules follow its daylight-saving changes")
    sp.add_argument("--boluses", metavar="FILE",
                    help="patient bolus requests, one time per line (e.g. 36h, 2d)")
    sp.add_argument("--fault", action="append", default=[], metavar="KIND@TIME[:DUR]",
                    help="inject a fault: stall@30d:2h, occlusion@12h:30min, "
                         "battery=3.2V@60d, power@45d (repeatable)")
    sp.add_argument("--json", action="store_true", help="print the report as one JSON object")
    sp.add_argument("--plot", metavar="FILE.png", help="draw delivery, reservoir and battery")
    sp.set_defaults(func=cmd_simulate)


def cmd_simulate(args):
    import json

    from .plans import load_plan_file, parse_volume_nl

    plan, meta = load_plan_file(args.plan)
    if args.days < 1 or args.days > 3650:
        raise PumprigError("--days must be 1..3650")
    fill = parse_volume_nl(args.fill, "--fill") if args.fill else meta.get("fill_nl", 20_000_000)
    boluses = load_bolus_file(args.boluses) if args.boluses else []
    faults = [parse_fault(f) for f in args.fault]
    if args.tz:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(args.tz)
        except Exception:
            raise PumprigError(f"--tz {args.tz!r}: unknown time zone") from None
    show = None if args.json else progress_bar()
    r = simulate(plan, args.days, fill, _start_epoch(args.start), args.tz, meta.get("scenario"),
                 boluses, faults, progress=show)
    if args.plot:
        plot(r, args.plot)
    if args.json:
        sys.stdout.write(json.dumps(r) + "\n")
    else:
        for line in format_summary(r):
            sys.stdout.write(line + "\n")
        if args.plot:
            sys.stdout.write(f"plot           {args.plot}\n")
    return 0
