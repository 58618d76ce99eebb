"""The long campaigns (`make campaign`): power loss on the virtual rig, and the auth throttle.

    .venv/bin/python bench/campaign.py [--kills 200] [--days 30] [--seed 1] [--no-write]

Power loss: a virtual rig (warp) runs the firmware with a P5-like plan (morphine, continuous
basal, patient boluses of 10 µL over 10 min) for `days` simulated days. At `kills` random
moments its interpreter is killed (SIGKILL through the world), then powered on again:
  - half the kills are `fault(kill_at_ms=T)`, at an exact virtual instant (the firmware is then
    blocked in a wait); half of those land inside a patient bolus;
  - the other half are `power_cut()` at a random *wall-clock* moment a few ms after a bolus
    request was written to the serial line, while the firmware is handling it and writing its
    records. The same request (same id) is sent again after the restart, as a client retry.
After every kill the firmware's account (`status()["delivered_steps"]`) is compared with the
world's pulse count (`measure()["pulses_fwd"]`) and with its own uncertainty (`uncertain_nl`,
the segments in flight at the cuts): account - uncertain <= pulses <= account must hold;
  lost steps       pulsed but not accounted (must be 0);
  over-count       accounted minus pulsed; its growth per power loss must stay within one
                   segment (max_segment_nl = 10 µL = 40 steps);
and the plan must be running again with the same plan CRC. At the end, after a quiet day, the
account must equal the plan's ideal over the plan's own time (paused while the power is off)
plus one bolus per accepted request id, within one step: a bolus restarted from zero, or
dosed twice for a retried request, shows as an excess ("double delivery"), a bolus dropped as a
deficit. The world's pulses must never exceed the ideal over powered time.

Auth throttle: brute-forcing a role's MAC against the server for 10 minutes of board time.

Cuts inside programming (issue 11): `program_cuts` cuts the power a few ms after a `refill`
with a new concentration or a `plan.set` was written, checks that the rig holds the state
before or after the command (never a mix), and retries the same request: it must complete
(bridge bolus, new plan). `--program-cuts N`, `--only-program-cuts`.

The figures go to docs/benchmarks.md (sections `campaign-power-loss`, `campaign-auth`,
`campaign-program-cuts`).
tests/host/test_power_loss.py runs a short power-loss campaign inside `make test`.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

from _home import temp_home

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DAY_MS = 86_400_000
STEP_PL = 250_000
SEG_STEPS = 40  # max_segment_nl (10 µL) / step_pl (0.25 µL)
BOLUS_MS = 600_000
PLAN = {"drug": "morphine", "conc_ng_ml": 10_000_000,
        "basal": {"kind": "continuous", "ng_day": 2_000_000},
        "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 3600, "max_24h": 12},
        # per hour: a bolus and the basal are 183 mcg; the dose limiter also counts each cut's
        # in-flight segment (up to 10 µL = 100 mcg) as delivered, which needs room
        "caps": {"ng_24h": 4_000_000, "ng_1h": 300_000}}
BASAL_NL_DAY = 200_000
BOLUS_NL = 10_000


class CampaignError(AssertionError):
    """A safety property failed during a campaign."""


def install(fs, mpy=True, firmware=None):
    """Put the firmware into a rig's filesystem as `pumprig flash` does
    (pumprig.virtual.firmware: .mpy modules, main.py and the boot modules as source, the
    manifest); mpy=False keeps the .py sources; firmware: another board/ directory."""
    from pumprig.virtual.firmware import install as install_firmware
    from pumprig.virtual.launcher import find_micropython

    install_firmware(fs, find_micropython(), src=firmware, compile_mpy=mpy)


def ideal_steps(plan_ms, boluses):
    """Whole steps the plan owes after plan_ms of plan time, with `boluses` finished ones."""
    return (BASAL_NL_DAY * plan_ms * 1000 // DAY_MS + boluses * BOLUS_NL * 1000) // STEP_PL


def _program_ms(fs):
    """The plan's programming instant in the current boot's board ms (from the state record
    the firmware wrote at boot): plan time = board ms - this."""
    with open(os.path.join(fs, "data", "state"), "rb") as f:
        line = f.read()
    return json.loads(line[: line.rfind(b"*")])["sched"]["program_ms"]


class PowerLoss:
    def __init__(self, kills=200, days=30, seed=1, heap="384k", firmware=None, progress=None,
                 mpy=True):
        self.mpy = mpy
        self.kills = kills
        self.days = days
        self.rng = random.Random(seed)
        self.heap = heap
        self.firmware = firmware
        self.progress = progress
        self.fig = {"kills": 0, "kill_at": 0, "kill_at_in_bolus": 0, "power_cut": 0,
                    "retries": 0,
                    "worst_over_per_loss_steps": 0, "over_steps": 0, "lost_steps": 0,
                    "double_steps": 0, "missing_steps": 0, "boluses": 0, "wdt_resets": 0,
                    "days": days, "pulses": 0, "ideal_final_steps": 0, "account_final_steps": 0,
                    "uncertain_ml": 0.0, "outside_uncertainty": 0}

    # ------------------------------------------------------------------ the rig
    def run(self):
        from pumprig.virtual.control import WorldClient
        from pumprig.virtual.link import connect
        from pumprig.virtual.rig import open_rig

        self._connect_fn = connect
        t_wall = time.monotonic()
        with temp_home("pumprig-campaign-") as home:
            self.home = home
            with open_rig(warp=True, heap=self.heap, board_dir=self.firmware,
                          compile_mpy=self.mpy) as rig:
                self.rig = rig
                self.w = rig.world
                self.w2 = WorldClient(rig.control)  # a second line for cuts during an advance
                self.c = self._connect()
                self.c.refill(20_000_000)
                self.c.plan_set(PLAN)
                self.crc = self.c.status()["plan_crc"]
                try:
                    self._campaign()
                except CampaignError:
                    raise
                except Exception as e:  # a rig that stopped answering: say what it shows
                    raise CampaignError("kill %d: %s: %s" % (self.fig["kills"], e,
                                                             self._diagnose())) from e
                self.fig["wdt_resets"] = self.w.wdt_resets
                self.c.close()
                self.w2.close()
        self.fig["wall_s"] = round(time.monotonic() - t_wall, 1)
        return self.fig

    def _diagnose(self):
        """The world's view and the serial output waiting (a traceback, a REPL prompt)."""
        out = ""
        try:
            st = self.w2.status()
            out = "world state %s, waiting %s, resets %s" % (st["state"], st["waiting"],
                                                             st["resets"])
            if self.c is not None and self.c.ser is not None:
                time.sleep(0.3)
                out += "\nserial: " + self.c.ser.read(self.c.ser.in_waiting or 1).decode(
                    errors="replace")[-3000:]
            keep = os.environ.get("PUMPRIG_CAMPAIGN_KEEP")
            if keep:
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(self.rig.fs, keep)
        except Exception as e:  # noqa: BLE001 (diagnosis is best effort)
            out += " (diagnosis failed: %s)" % e
        return out

    def _connect(self):
        return self._connect_fn(self.rig.link, home=self.home)

    def _boot_world_ms(self, st):
        return self.w.measure()["time_ms"] - st["ms"]

    def _campaign(self):
        rng = self.rng
        end_ms = self.days * DAY_MS
        t0 = self.w.measure()["time_ms"]
        times = sorted(t0 + rng.randrange(3_600_000, end_ms) for _ in range(self.kills))
        self.accepted = set()  # request ids whose bolus the pump accepted
        self.powered_ms = 0
        self.boot_world = self._boot_world_ms(self.c.status())
        self.over_prev = 0
        next_bolus = t0 + 3_600_000
        for i, t_kill in enumerate(times):
            # boluses on the way: a patient pressing every 1-3 h
            while next_bolus < t_kill:
                self._advance_to(next_bolus)
                self._bolus("b%d" % next_bolus)
                next_bolus += rng.randrange(3_600_000, 3 * 3_600_000)
            now = self.w.measure()["time_ms"]
            if t_kill <= now:
                t_kill = now + 1 + rng.randrange(600_000)
            if i % 2 == 0:
                self._kill_at(t_kill, in_bolus=(i % 4 == 0))
            else:
                self._advance_to(t_kill)
                self._power_cut()
            if self.progress:
                self.progress(i + 1, self.fig)
        # a quiet day: every bolus finishes, the segments prepaid by the cuts are used up
        self._advance_to(self.w.measure()["time_ms"] + DAY_MS)
        self._final_check()

    def _advance_to(self, t_ms):
        m = self.w.measure()
        if t_ms > m["time_ms"]:
            self.w.advance(to_ms=t_ms, timeout_s=120)

    def _bolus(self, req_id):
        """A patient presses for a bolus: True if accepted (refusals are expected)."""
        from pumprig.errors import DeviceError

        try:
            self._raw(req_id)
        except DeviceError:
            return False
        return True

    def _raw(self, req_id, tries=20):
        """Send the bolus request with this id (resent with the same id while unanswered, as
        a client retries); returns the result or raises DeviceError."""
        from pumprig.errors import DeviceError, RigTimeout

        c = self.c
        line = c.frame("bolus", {}, req_id=req_id)[1]  # signed in this session, then resent
        for _ in range(tries):
            c._write(line)
            f = c._wait_response(req_id, time.monotonic() + 0.25)
            if f is not None:
                break
        else:
            raise RigTimeout("no answer to bolus %s" % req_id)
        if f.name != "ok":
            raise DeviceError(f.body.get("code"), f.body.get("message", ""))
        self.accepted.add(req_id)
        return f.body

    def _kill_at(self, t_kill, in_bolus):
        rng = self.rng
        if in_bolus:
            # press for a bolus now (if the lockout allows), and cut inside it
            self._advance_to(t_kill - BOLUS_MS)
            self._bolus("k%d" % t_kill)
            t_kill = self.w.measure()["time_ms"] + 1 + rng.randrange(BOLUS_MS - 1)
            self.fig["kill_at_in_bolus"] += 1
        before = self._account()
        self.w.fault(kill_at_ms=t_kill)
        self.w.advance(to_ms=t_kill, timeout_s=120)
        st = self.w2.status()
        if st["powered"]:
            raise CampaignError("kill_at_ms %d did not cut the power" % t_kill)
        self.fig["kill_at"] += 1
        self._after_kill(t_kill, before)

    def _power_cut(self):
        """Write a bolus request, then cut the power a random few ms later (wall clock), while
        the firmware is busy with it: parsing, dosing, writing its records."""

        rng = self.rng
        before = self._account()
        req = "c%d-%d" % (self.fig["kills"], rng.randrange(1 << 30))
        self.c._write(self.c.frame("bolus", {}, req_id=req)[1])
        time.sleep(rng.random() * 0.004)
        m = self.w2.power_cut()
        self.fig["power_cut"] += 1
        self._after_kill(m["time_ms"], before, retry=req)

    def _wait_boot(self, port):
        """Until the firmware waits (booted) or has fallen to the REPL (crashed at boot)."""
        end = time.monotonic() + 20
        while time.monotonic() < end:
            st = self.w2.status()
            if st["state"] == "repl":
                text = port.read(65536).decode(errors="replace")
                raise CampaignError("kill %d: the firmware crashed at boot:\n%s"
                                    % (self.fig["kills"], text[-3000:]))
            if st["state"] == "running" and st["waiting"]:
                return
            time.sleep(0.002)
        raise CampaignError("kill %d: the firmware did not boot" % self.fig["kills"])

    def _account(self):
        """(accounted, pulsed) now."""
        st = self.c.status()
        return st["delivered_steps"], self.w.measure()["pulses_fwd"]

    def _after_kill(self, t_cut, before, retry=None):
        fig = self.fig
        fig["kills"] += 1
        self.powered_ms += t_cut - self.boot_world
        try:
            self.c.close()
        except Exception:  # noqa: BLE001 (the port of a dead interpreter)
            pass
        import serial

        port = serial.serial_for_url(self.rig.link, timeout=0.2)  # the boot's own output
        try:
            self.w.power_on()
            self._wait_boot(port)
        finally:
            port.close()
        self.c = self._connect()
        st = self.c.status()
        self.boot_world = self._boot_world_ms(st)
        pulsed = self.w.measure()["pulses_fwd"]
        accounted = st["delivered_steps"]
        if pulsed > accounted:
            fig["lost_steps"] += pulsed - accounted
        over = accounted - pulsed
        # what the firmware says it may have counted without pulsing (the in-flight segments)
        unc = st.get("uncertain_nl", 0) * 1000 // STEP_PL
        fig["uncertain_ml"] = st.get("uncertain_nl", 0) / 1e6
        if not accounted - unc <= pulsed <= accounted:
            fig["outside_uncertainty"] += 1
        inc = over - self.over_prev
        fig["worst_over_per_loss_steps"] = max(fig["worst_over_per_loss_steps"], inc)
        fig["over_steps"] = over
        self.over_prev = over
        if inc > SEG_STEPS or pulsed > accounted:
            raise CampaignError("kill %d: over-count grew by %d steps, lost %d"
                                % (fig["kills"], inc, max(0, pulsed - accounted)))
        if st["therapy"] != "running" or st["plan_crc"] != self.crc:
            raise CampaignError("kill %d: the plan did not resume: %s %s"
                                % (fig["kills"], st["therapy"], st["plan_crc"]))
        if "RESET" not in st["alarms"]:
            raise CampaignError("kill %d: no RESET alarm" % fig["kills"])
        self.c.ack("RESET")
        if retry is not None:
            # the client retries the request it never got an answer to, with the same id
            fig["retries"] += 1
            from pumprig.errors import DeviceError

            try:
                self._raw(retry)
            except DeviceError:
                pass
        self._check_plan_time()

    def _check_plan_time(self):
        st = self.c.status()
        plan_ms = st["ms"] - _program_ms(self.rig.fs)
        powered = self.powered_ms + (self.w.measure()["time_ms"] - self.boot_world)
        if plan_ms > powered:
            raise CampaignError("plan time %d ms ran ahead of powered time %d ms"
                                % (plan_ms, powered))
        ideal_powered = ideal_steps(powered, len(self.accepted)) + 1
        pulsed = self.w.measure()["pulses_fwd"]
        if pulsed > ideal_powered + SEG_STEPS:  # a bolus in progress may run ahead of the end
            self.fig["double_steps"] = max(self.fig["double_steps"], pulsed - ideal_powered)
        return plan_ms

    def _final_check(self):
        fig = self.fig
        plan_ms = self._check_plan_time()
        st = self.c.status()
        ideal = ideal_steps(plan_ms, len(self.accepted))
        acc = st["delivered_steps"]
        fig["boluses"] = len(self.accepted)
        fig["pulses"] = self.w.measure()["pulses_fwd"]
        fig["ideal_final_steps"] = ideal
        fig["account_final_steps"] = acc
        if acc > ideal + 1:
            fig["double_steps"] = max(fig["double_steps"], acc - ideal - 1)
        if acc < ideal - 1:
            fig["missing_steps"] = ideal - 1 - acc
        ideal_powered = ideal_steps(self.powered_ms + self.w.measure()["time_ms"]
                                    - self.boot_world, len(self.accepted))
        if fig["pulses"] > ideal_powered + 1:
            fig["double_steps"] = max(fig["double_steps"], fig["pulses"] - ideal_powered - 1)
        unc = st.get("uncertain_nl", 0) * 1000 // STEP_PL
        fig["uncertain_ml"] = st.get("uncertain_nl", 0) / 1e6
        if not acc - unc <= fig["pulses"] <= acc:
            fig["outside_uncertainty"] += 1
        if fig["double_steps"] or fig["missing_steps"] or fig["lost_steps"] \
                or fig["outside_uncertainty"]:
            raise CampaignError("final account %d steps, ideal %d (plan time %d ms), pulses %d: "
                                "%s" % (acc, ideal, plan_ms, fig["pulses"], fig))


# ---------------------------------------------------------------- cuts inside programming
PLAN_A = {"drug": "baclofen", "conc_ng_ml": 2_000_000, "catheter_nl": 100_000,
          "basal": {"kind": "continuous", "ng_day": 400_000}}
PLAN_B = dict(PLAN_A, basal={"kind": "continuous", "ng_day": 500_000},
              start={"kind": "bolus", "ng": 50_000, "dur_s": 600})
BRIDGE_NL = 200_000 + 100_000  # the sim board's pump path + PLAN_A's catheter


def program_cuts(cuts=20, seed=1, heap="384k", mpy=True):
    """Power cuts inside `refill` with a new concentration and inside `plan.set` on the
    virtual rig (issue 11, findings 4 and 5): the request is written, the power cut a random
    few ms later (wall clock), the rig powered on; the stored state must be the one before
    or the one after (read from status before the retry), and the same request (same id)
    retried after the restart must complete it: bridge bolus of the refill, the new plan
    with its start bolus pending or given. Returns the figures; CampaignError on a failure."""
    from pumpcore import dose
    from pumprig.virtual.control import WorldClient
    from pumprig.virtual.link import connect as _vconnect
    from pumprig.virtual.rig import open_rig

    rng = random.Random(seed)
    fig = {"cuts": 0, "refill_cuts": 0, "plan_cuts": 0, "found_before": 0, "found_after": 0,
           "torn": 0, "retries_ok": 0}
    with temp_home("pumprig-progcuts-") as home, \
            open_rig(warp=True, heap=heap, compile_mpy=mpy) as rig:
        w = rig.world
        w2 = WorldClient(rig.control)
        c = _vconnect(rig.link, home=home)
        c.calib_set(STEP_PL)
        c.refill(20_000_000)
        c.plan_set(PLAN_A)
        c.plan_set(PLAN_B)
        cur_b = True  # PLAN_B (with a start bolus) runs; a plan.set sends the other
        conc = PLAN_A["conc_ng_ml"]
        w.advance(by_ms=3_600_000)
        for k in range(cuts):
            w.advance(by_ms=600_000 + rng.randrange(3_600_000))
            st0 = c.status()
            if k % 2 == 0:
                new_conc = 500_000 if conc != 500_000 else 2_000_000
                cmd, args = "refill", {"volume_nl": 18_000_000, "conc_ng_ml": new_conc}
                fig["refill_cuts"] += 1
            else:
                new_plan = dict(PLAN_A if cur_b else PLAN_B, conc_ng_ml=conc)
                cmd, args = "plan.set", {"plan": new_plan}
                fig["plan_cuts"] += 1
            req = "pc%d-%d" % (k, rng.randrange(1 << 30))
            line = c.frame(cmd, args, req)[1]  # signed in this session
            c._write(line)
            time.sleep(rng.random() * 0.006)
            w2.power_cut()
            fig["cuts"] += 1
            c.close()
            w.power_on()
            c = _vconnect(rig.link, home=home)
            st = c.status()
            if cmd == "refill":
                # (a plan.set keeps an earlier refill's bridge: the line still holds it)
                before = st["conc_ng_ml"] == conc and \
                    st["reservoir_nl"] <= st0["reservoir_nl"]
                after = st["conc_ng_ml"] == new_conc and st["mode"] == "bridge" and \
                    17_900_000 <= st["reservoir_nl"] <= 18_000_000
            else:
                before = st["plan_crc"] == st0["plan_crc"]
                after = st["plan_crc"] == dose.crc(_checked(new_plan)) and \
                    st["gen"] > st0["gen"]
            if st["therapy"] != "running" or "MEMORY" in st["alarms"] or \
                    before == after:
                fig["torn"] += 1
                raise CampaignError("cut %d inside %s: the rig holds neither the state "
                                    "before nor after: %s" % (k, cmd, st))
            fig["found_before" if before else "found_after"] += 1
            # the client's retry: same id, after logging in again (signed in the new
            # session, as Client.request does); resent as it is while unanswered
            line = c.frame(cmd, args, req)[1]
            for _ in range(20):
                c._write(line)
                f = c._wait_response(req, time.monotonic() + 0.5)
                if f is not None:
                    break
            if f is None or f.name != "ok":
                raise CampaignError("cut %d: the retried %s failed: %s"
                                    % (k, cmd, None if f is None else f.body))
            st = c.status()
            if cmd == "refill":
                if f.body.get("bridge_nl") != BRIDGE_NL or st["mode"] != "bridge" or \
                        st["conc_ng_ml"] != new_conc:
                    raise CampaignError("cut %d: refill retried: %s, status %s"
                                        % (k, f.body, st))
                conc = new_conc
            else:
                want = dose.crc(_checked(new_plan))
                if f.body.get("plan_crc") != want or st["plan_crc"] != want:
                    raise CampaignError("cut %d: plan.set retried: %s" % (k, st))
                cur_b = not cur_b
            fig["retries_ok"] += 1
            c.ack()
        c.close()
        w2.close()
    return fig


def _checked(plan):
    from pumpcore import plan as core

    return core.validate(plan, {"max_nl_day": 200 * 86_400 * STEP_PL // 1000,
                                "reservoir_nl": 20_000_000})


def power_loss(kills=200, days=30, seed=1, heap="384k", progress=None, mpy=True):
    """Run the power-loss campaign; returns its figures (raises CampaignError on a failure)."""
    return PowerLoss(kills, days, seed, heap, progress=progress, mpy=mpy).run()


# ---------------------------------------------------------------------- cuts inside commands
CMD_PLAN_B = dict(PLAN, start={"kind": "bolus", "ng": 500_000, "dur_s": 3600},
                  caps={"ng_24h": 4_000_000, "ng_1h": 800_000})
CMD_KINDS = ("plan.set", "refill", "clock.set", "ack")


class CommandCuts(PowerLoss):
    """Power cuts while a clinician command is in flight over the pty: plan.set (between a
    plain plan and one with a start bolus), refill (with a new concentration every time),
    clock.set (a new UTC offset and a daylight-saving change) and ack. Each cut comes at a
    random wall-clock moment after the request was written (biased late), within 1.3 times the
    time the rig took to answer the same command uncut (measured once at the start, `window_ms`); then,
    after the restart:
      answers   the rig boots and answers `status`;
      torn      the state is the one before the command or the one after it (plan CRC and
                whether its start bolus is under way; drug concentration and the refill's
                bridge under way; the clock's UTC offset), never a mix;
      retry     the same request, with the same id, completes (`ok`) and leaves the state after;
      account   the world's pulse count (the control socket's measure, never the firmware's
                word) is at most the account (`delivered_steps`) and at least the account minus
                `uncertain_steps` (or `uncertain_nl`/`uncertain_ml`) when status shows it;
                without such a field, the over-count grows by at most one segment per cut.
    Time advances 1.5-3 h (warp) between commands, so the motor runs in between."""

    def __init__(self, cuts=8, seed=1, heap="384k", firmware=None, progress=None, mpy=True,
                 keep_going=False):
        super().__init__(cuts, 1, seed, heap, firmware, progress, mpy)
        self.keep_going = keep_going  # count failed checks and go on (the long campaign)
        self._last_failed_cut = None
        self.fig = {"kills": 0, "cuts": 0, "failures": 0, "failed_cuts": 0, "failed": [],
                    "by_command": {k: 0 for k in CMD_KINDS}, "ended_old": 0,
                    "ended_new": 0, "retries_ok": 0, "over_steps": 0,
                    "worst_over_per_cut_steps": 0, "uncertain_field": None, "pulses": 0,
                    "account_steps": 0}

    def _campaign(self):
        rng = self.rng
        self.over_prev = self._over()
        self.conc = PLAN["conc_ng_ml"]
        self.use_b = True
        self.offset = 0
        # each command once without a cut: its time on the rig (write to answer) sets the window
        # the cuts are spread over
        self.window_s = {}
        for kind in CMD_KINDS:
            args, _ = self._request(kind)
            t = time.monotonic()
            f = self._send("w%d" % CMD_KINDS.index(kind), kind, args)
            if f.name != "ok":
                raise CampaignError("%s refused before any cut: %r" % (kind, f.body))
            self.window_s[kind] = 1.3 * (time.monotonic() - t)
        self.fig["window_ms"] = {k: round(v * 1000, 1) for k, v in self.window_s.items()}
        for i in range(self.kills):
            m = self.w.measure()
            self._advance_to(m["time_ms"] + rng.randrange(5_400_000, 3 * 3_600_000))
            kind = CMD_KINDS[i % len(CMD_KINDS)]
            self._cut_in(kind)
            if self.progress:
                self.progress(i + 1, self.fig)
        st = self.c.status()
        self.fig["pulses"] = self.w.measure()["pulses_fwd"]
        self.fig["account_steps"] = st["delivered_steps"]
        if self.fig["failures"]:
            raise CampaignError("%d checks failed in %d of %d cuts; the first: %s"
                                % (self.fig["failures"], self.fig["failed_cuts"],
                                   self.fig["cuts"], self.fig["failed"][0]))

    def _fail(self, msg):
        """A failed check: raised, or with keep_going counted (the first few kept)."""
        if not self.keep_going:
            raise CampaignError(msg)
        self.fig["failures"] += 1
        if self._last_failed_cut != self.fig["cuts"]:
            self._last_failed_cut = self.fig["cuts"]
            self.fig["failed_cuts"] += 1
        if len(self.fig["failed"]) < 5:
            self.fig["failed"].append(msg)

    def _over(self):
        st = self.c.status()
        return st["delivered_steps"] - self.w.measure()["pulses_fwd"]

    def _view(self, kind, st):
        if kind == "plan.set":
            # whether a start bolus is under way (not the activity itself: a refill's bridge
            # may or may not go on under the new plan)
            return {"plan_crc": st["plan_crc"], "start_bolus": st["mode"] == "bolus"}
        if kind == "refill":
            # the new concentration comes with its bridge (a start bolus under way shows as
            # the mode while the bridge runs under it); an older refill's bridge may end at
            # any time, so it is not part of the state before
            v = {"conc_ng_ml": st["conc_ng_ml"]}
            if st["conc_ng_ml"] == self.conc:
                v["bridge"] = st["mode"] in ("bridge", "bolus")
            return v
        if kind == "clock.set":
            return {"offset_s": self.c.clock_get()["offset_s"]}
        return {}

    def _request(self, kind):
        """(args, the view expected after it; plan_crc is filled in from the answer)."""
        if kind == "plan.set":
            self.use_b = not self.use_b
            plan = dict(CMD_PLAN_B if self.use_b else PLAN, conc_ng_ml=self.conc)
            return {"plan": plan}, {"start_bolus": self.use_b}
        if kind == "refill":
            self.conc = 5_000_000 if self.conc == 10_000_000 else 10_000_000
            return ({"volume_nl": 20_000_000, "conc_ng_ml": self.conc},
                    {"conc_ng_ml": self.conc, "bridge": True})
        if kind == "clock.set":
            self.offset = 3600 - self.offset
            ep = self.c.clock_get()["epoch_s"]
            return ({"epoch_s": ep, "offset_s": self.offset,
                     "next_change_epoch_s": ep + 30 * 86_400,
                     "next_offset_s": 3600 - self.offset}, {"offset_s": self.offset})
        return {}, {}

    def _send(self, req_id, cmd, args, tries=20):
        """Send a request with this id, signed in the client's session (resent as it is while
        unanswered); returns the answer frame."""
        from pumprig.errors import RigTimeout

        line = self.c.frame(cmd, args, req_id)[1]
        for _ in range(tries):
            self.c._write(line)
            f = self.c._wait_response(req_id, time.monotonic() + 0.5)
            if f is not None:
                return f
        raise RigTimeout("no answer to %s %s" % (cmd, req_id))

    def _cut_in(self, kind):
        fig, rng = self.fig, self.rng
        args, expect = self._request(kind)
        view_before = self._view(kind, self.c.status())
        req = "x%d-%d" % (fig["cuts"], rng.randrange(1 << 30))
        self.c._write(self.c.frame(kind, args, req)[1])
        # biased late (square root): the records are written at the end of a command
        time.sleep(rng.random() ** 0.5 * self.window_s[kind])
        self.w2.power_cut()
        fig["cuts"] += 1
        fig["kills"] = fig["cuts"]
        fig["by_command"][kind] += 1
        st = self._restart()
        view_cut = self._view(kind, st)
        f = self._send(req, kind, args)
        if f.name != "ok":
            self._fail("cut %d in %s: the retry (same id) was refused: %r"
                       % (fig["cuts"], kind, f.body))
        else:
            fig["retries_ok"] += 1
        if kind == "plan.set":
            expect["plan_crc"] = f.body.get("plan_crc")
        st2 = self.c.status()
        view_retry = self._view(kind, st2)
        if view_retry != expect:
            self._fail("cut %d in %s: after the retry the state is %r, expected %r (before %r, "
                       "after the cut %r)" % (fig["cuts"], kind, view_retry, expect, view_before,
                                              view_cut))
        if view_cut == expect and view_cut != view_before:
            fig["ended_new"] += 1
        elif view_cut == view_before:
            fig["ended_old"] += 1
        else:
            self._fail("cut %d in %s: torn state after the restart: %r is neither the state "
                       "before %r nor after %r" % (fig["cuts"], kind, view_cut, view_before,
                                                   expect))
        if "RESET" in st2["alarms"]:
            self.c.ack("RESET")

    def _restart(self):
        """Power on after a cut; the checks of the account against the world's pulses."""
        fig = self.fig
        try:
            self.c.close()
        except Exception:  # noqa: BLE001 (the port of a dead interpreter)
            pass
        import serial

        port = serial.serial_for_url(self.rig.link, timeout=0.2)
        try:
            self.w.power_on()
            self._wait_boot(port)
        finally:
            port.close()
        self.c = self._connect()
        st = self.c.status()  # the rig answers
        pulsed = self.w.measure()["pulses_fwd"]
        acc = st["delivered_steps"]
        if pulsed > acc:
            self._fail("cut %d: the world pulsed %d steps, the account says %d"
                       % (fig["cuts"], pulsed, acc))
        unc = _uncertain_steps(st)
        if unc is not None:
            fig["uncertain_field"] = True
            if pulsed < acc - unc:
                self._fail("cut %d: the world pulsed %d steps, below the account %d minus its "
                           "uncertain bound %d" % (fig["cuts"], pulsed, acc, unc))
        else:
            fig["uncertain_field"] = False
        over = acc - pulsed
        inc = over - self.over_prev
        fig["worst_over_per_cut_steps"] = max(fig["worst_over_per_cut_steps"], inc)
        fig["over_steps"] = over
        self.over_prev = over
        if unc is None and inc > SEG_STEPS:
            self._fail("cut %d: the over-count grew by %d steps (> one segment)"
                       % (fig["cuts"], inc))
        return st


def _uncertain_steps(st):
    """The status's bound of counted-but-maybe-not-pulsed, in steps (None if it has none)."""
    for k, v in st.items():
        if not k.startswith("uncertain_") or not isinstance(v, (int, float)):
            continue
        unit = k.rsplit("_", 1)[1]
        if unit == "steps":
            return v
        if unit == "nl":
            return (v * 1000 + STEP_PL - 1) // STEP_PL
        if unit == "ml":
            return int(v * 1e9 / STEP_PL + 0.999999)
    return None


def command_cuts(cuts=8, seed=1, heap="384k", progress=None, mpy=True):
    """Cuts inside plan.set, refill, clock.set and ack; returns the figures (CampaignError on a
    failure)."""
    return CommandCuts(cuts, seed, heap, progress=progress, mpy=mpy).run()


# ---------------------------------------------------------------------- auth brute force
def auth_attack(minutes=10, seed=1, step_ms=10, reconnect=False):
    """Hammer `auth` with wrong MACs as fast as the server answers, board time advancing
    `step_ms` per attempt, for `minutes` of board time; with `reconnect`, every attempt on a
    new connection (the port closed and opened again: a fresh per-connection back-off, only
    the rig-wide ceiling left). Returns the figures."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "board"))
    from _util import take_output
    from fakeboard import FakeBoard
    from pumpcore import proto
    from pumpcore.app import App

    rng = random.Random(seed)
    d = tempfile.mkdtemp(prefix="pumprig-auth-")
    try:
        keys = {"patient": "11" * 32, "clinician": "22" * 32}
        b = FakeBoard(root=d + "/")
        app = App(b, keys=keys)
        srv = app.server
        sent = tried = throttled = 0
        now = 0
        end = minutes * 60_000
        while now < end:
            if reconnect:
                srv.end(True)
            sent += 1
            srv.feed(proto.encode_request("h%d" % sent, "hello", {}), now)
            take_output(srv)
            sent += 1
            mac = "%064x" % rng.getrandbits(256)
            cnonce = "%032x" % rng.getrandbits(128)
            srv.feed(proto.encode_request("a%d" % sent, "auth",
                                          {"role": "clinician", "mac": mac, "cnonce": cnonce}),
                     now)
            out = [proto.decode(x + b"\n") for x in take_output(srv).split(b"\n")
                   if x.startswith(b"=")][0]  # the answer (events may come first)
            code = out.body.get("code") if out.name == "err" else None
            if code == proto.THROTTLED:
                throttled += 1
            elif code == proto.AUTH_FAILED:
                tried += 1
            else:
                raise CampaignError("a random MAC was accepted: %r" % (out.body,))
            now += step_ms
        return {"minutes": minutes, "requests": sent // 2, "macs_checked": tried,
                "throttled": throttled, "per_minute": tried / minutes}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--command-cuts", type=int, default=80,
                    help="power cuts inside plan.set, refill, clock.set and ack (0: none)")
    ap.add_argument("--source", choices=("mpy", "py"), default="mpy",
                    help="firmware as flashed (.mpy, default) or as .py sources")
    ap.add_argument("--firmware", default=None, help="a firmware tree instead of board/")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--program-cuts", type=int, default=60,
                    help="power cuts inside refill and plan.set (half each)")
    ap.add_argument("--only-program-cuts", action="store_true",
                    help="run the cuts inside refill and plan.set only")
    ap.add_argument("--only-command-cuts", action="store_true",
                    help="run the cuts inside commands only, write only their section")
    ap.add_argument("--auth-only", action="store_true",
                    help="only the auth brute force (seconds), only its section")
    args = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    from _report import write_section

    if args.auth_only:
        auth, again = auth_attack(), auth_attack(reconnect=True)
        print(json.dumps([auth, again], indent=1, sort_keys=True))
        if not args.no_write:
            write_section("campaign-auth", "Auth brute-force throttle",
                          ".venv/bin/python bench/campaign.py --auth-only", _auth_body(auth, again))
        return 0
    if args.only_command_cuts:
        cfig, cc_ok = _command_cuts(args)
        if not args.no_write and args.firmware is None:
            write_section("campaign-command-cuts", "Power cuts inside commands",
                          ".venv/bin/python bench/campaign.py --only-command-cuts "
                          "--command-cuts %d --seed %d" % (args.command_cuts, args.seed),
                          _command_cuts_body(cfig, cc_ok))
        return 0 if cc_ok else 1
    print("power cuts inside refill/plan.set: %d" % args.program_cuts, flush=True)
    t0 = time.monotonic()
    try:
        pc = program_cuts(args.program_cuts, args.seed, mpy=args.source == "mpy")
        pc_fail = None
    except CampaignError as e:
        pc, pc_fail = {}, str(e).split("\n")[0]
        print("FAILED:", e)
    print(json.dumps(pc, indent=1, sort_keys=True), flush=True)
    if not args.no_write and args.firmware is None:
        body = (
            "The power cut a random 0-6 ms (wall clock) after a `refill` with a new "
            "concentration (2000 <-> 500 mcg/mL) or a `plan.set` (a plan with a start bolus "
            "and one without, in turn) was written to the virtual rig; then power on, read "
            "the stored state, and retry the same request (same id) as the client does "
            "(issue 11, findings 4 and 5).\n\n"
            "| figure | value |\n|---|---|\n"
            "| cuts | %s (%s inside refill, %s inside plan.set) |\n"
            "| stored state found as before the command / after it | %s / %s |\n"
            "| torn (neither: e.g. the new concentration with the old reservoir) | %s |\n"
            "| retries completed (bridge bolus of 300 µL, new plan) | %s |\n"
            "| wall time | %.0f s |\n%s"
            % (pc.get("cuts", "-"), pc.get("refill_cuts", "-"), pc.get("plan_cuts", "-"),
               pc.get("found_before", "-"), pc.get("found_after", "-"), pc.get("torn", "-"),
               pc.get("retries_ok", "-"), time.monotonic() - t0,
               "" if pc_fail is None else "\n**FAILED**: %s\n" % pc_fail))
        write_section("campaign-program-cuts", "Power cuts inside refill and plan.set",
                      "make campaign  (.venv/bin/python bench/campaign.py --program-cuts %d "
                      "--seed %d)" % (args.program_cuts, args.seed), body)
    if args.only_program_cuts:
        return 0 if pc_fail is None else 1

    def progress(i, fig):
        if i % 20 == 0:
            print("  %d kills, worst over-count %d steps, uncertain_ml %.4f"
                  % (i, fig["worst_over_per_loss_steps"], fig["uncertain_ml"]), flush=True)

    print("power loss: %d kills over %d days" % (args.kills, args.days), flush=True)
    from pathlib import Path

    pl = PowerLoss(args.kills, args.days, args.seed, progress=progress,
                   mpy=args.source == "mpy",
                   firmware=Path(args.firmware) if args.firmware else None)
    try:
        fig = pl.run()
        ok = True
    except CampaignError as e:
        print("FAILED:", e)
        fig = pl.fig
        fig["boluses"] = len(getattr(pl, "accepted", ()))
        ok = False
        failure = str(e).split("\n")[0]
        if "world state repl" in failure:
            failure = ("kill %d: the firmware fell to the REPL after the restart (a crash; "
                       "seen: MemoryError in canon.dumps, a fragmented heap)" % fig["kills"])
    print(json.dumps(fig, indent=1, sort_keys=True))
    cc_ok = True
    if args.command_cuts:
        cfig, cc_ok = _command_cuts(args)
    auth, again = auth_attack(), auth_attack(reconnect=True)
    print(json.dumps([auth, again], indent=1, sort_keys=True))
    if not args.no_write and args.firmware is None:
        fig.setdefault("wall_s", 0)
        cmd = "make campaign  (.venv/bin/python bench/campaign.py --kills %d --days %d --seed %d)" \
            % (args.kills, args.days, args.seed)
        body = (
            "SIGKILL of the virtual rig's interpreter at random moments of a %d-day time-warped "
            "P5-like plan (morphine 2 mg/day continuous, patient boluses of 0.1 mg = 10 µL over "
            "10 min, pressed every 1-3 h), then power on, reconnect and compare the firmware's "
            "account (`delivered_steps`) with the world's pulse count.\n\n"
            "| figure | value |\n|---|---|\n"
            "| power losses | %d (%d at an exact virtual instant, %d of them inside a bolus; "
            "%d at a random wall-clock moment while a bolus request was being handled) |\n"
            "| lost steps (pulsed, not accounted) | %d |\n"
            "| double deliveries (account or pulses above the ideal) | %d steps |\n"
            "| boluses missing from the account | %d steps |\n"
            "| worst over-count per power loss | %d steps = %d nL (bound: one segment, "
            "40 steps = 10 µL) |\n"
            "| total over-count after all losses | %d steps |\n"
            "| uncertainty the firmware shows (`uncertain_ml`) | %.4f mL = %d steps |\n"
            "| checks where account - uncertain <= pulses <= account failed | %d |\n"
            "| retried bolus requests (same id after the restart) | %d |\n"
            "| boluses accepted | %d |\n"
            "| final account vs plan ideal (plan time) | %s vs %s steps |\n"
            "| wall time | %.0f s |\n%s"
            % (fig["days"], fig["kills"], fig["kill_at"], fig["kill_at_in_bolus"],
               fig["power_cut"], fig["lost_steps"], fig["double_steps"], fig["missing_steps"],
               fig["worst_over_per_loss_steps"],
               fig["worst_over_per_loss_steps"] * STEP_PL // 1000, fig["over_steps"],
               fig["uncertain_ml"], round(fig["uncertain_ml"] * 1e9) // STEP_PL,
               fig["outside_uncertainty"], fig["retries"], fig["boluses"],
               fig["account_final_steps"] if ok else "-", fig["ideal_final_steps"] if ok else "-",
               fig["wall_s"],
               "" if ok else "\n**FAILED** after %d power losses: %s\n" % (fig["kills"], failure)))
        write_section("campaign-power-loss", "Power-loss campaign", cmd, body)
        if args.command_cuts:
            write_section("campaign-command-cuts", "Power cuts inside commands", cmd,
                          _command_cuts_body(cfig, cc_ok))
        write_section("campaign-auth", "Auth brute-force throttle", cmd, _auth_body(auth, again))
    return 0 if ok and cc_ok and pc_fail is None else 1


def _command_cuts(args):
    """The cuts inside commands (CommandCuts, going on past a failed check): (figures, ok)."""
    from pathlib import Path

    print("power cuts inside commands: %d" % args.command_cuts, flush=True)
    cc = CommandCuts(args.command_cuts, args.seed, mpy=args.source == "mpy",
                     firmware=Path(args.firmware) if args.firmware else None, keep_going=True)
    t_cc = time.monotonic()
    ok = True
    try:
        cfig = cc.run()
    except CampaignError as e:
        print("FAILED:", e)
        cfig = cc.fig
        cfig["failure"] = str(e).split("\n")[0]
        ok = False
    cfig["wall_s"] = round(time.monotonic() - t_cc, 1)
    print(json.dumps(cfig, indent=1, sort_keys=True))
    return cfig, ok and not cfig.get("failures")


def _command_cuts_body(f, ok):
    by = f["by_command"]
    return (
        "The virtual rig (warp, firmware as .mpy) running the campaign's plan; its power is cut "
        "(through the control socket) at a random wall-clock moment after a clinician request "
        "was written to the pty, within 1.3 times the time the rig took to answer the same "
        "command uncut. Commands in turn: plan.set (a plain plan and one with a 0.5 mg start "
        "bolus), refill with a new concentration (10 <-> 5 mg/mL), clock.set (a new UTC "
        "offset with a daylight-saving change) and ack. After each restart: the rig answers, "
        "the state is the one before or after the command, the request retried with its id "
        "completes and leaves the state after, and the world's pulse count is within "
        "[account - uncertain, account].\n\n"
        "| figure | value |\n|---|---|\n"
        "| cuts | %d (plan.set %d, refill %d, clock.set %d, ack %d) |\n"
        "| state after the restart: before / after the command | %d / %d |\n"
        "| retries answered `ok` | %d |\n"
        "| command times on the rig (cut window / 1.3) | %s |\n"
        "| over-count (account - world pulses) at the end | %d steps (worst growth per cut %d) |\n"
        "| `uncertain_*` bound in status | %s |\n"
        "| checks failed (in how many cuts) | %d (%d) |\n"
        "| wall time | %s s |\n%s"
        % (f["cuts"], by["plan.set"], by["refill"], by["clock.set"], by["ack"], f["ended_old"],
           f["ended_new"], f["retries_ok"],
           ", ".join("%s %.0f ms" % (k, v / 1.3) for k, v in f.get("window_ms", {}).items()),
           f["over_steps"], f["worst_over_per_cut_steps"],
           {True: "present, checked", False: "absent (only pulses <= account checked)",
            None: "-"}[f["uncertain_field"]], f.get("failures", 0), f.get("failed_cuts", 0),
           f.get("wall_s", "-"),
           "" if ok else "\n**FAILED**: %s\n\nFirst failed checks:\n\n%s\n"
           % (f.get("failure", ""), "\n".join("- " + m for m in f.get("failed", [])))))


def _auth_body(auth, again):
    return (
        "A clinician MAC guessed by brute force against the firmware's server (App on a fake "
        "board), `hello` + `auth` with a random MAC as fast as the server answers, board "
        "time advancing 10 ms per attempt, for %d minutes of board time: on one connection, "
        "and with the port closed and opened again before every attempt (a fresh "
        "per-connection back-off each time: only the rig-wide ceiling is left).\n\n"
        "| figure | one connection | a new connection per attempt |\n|---|---|---|\n"
        "| auth requests sent | %d | %d |\n| MACs actually checked | %d | %d |\n"
        "| refused unchecked (THROTTLED) | %d | %d |\n"
        "| MACs checked per minute | %.1f (1 s doubling to 60 s) | %.1f (rig-wide: 10, then "
        "one per 6 s) |\n"
        % (auth["minutes"], auth["requests"], again["requests"], auth["macs_checked"],
           again["macs_checked"], auth["throttled"], again["throttled"], auth["per_minute"],
           again["per_minute"]))


if __name__ == "__main__":
    sys.exit(main())
