"""The pump application: state, commands, and one loop iteration. Pure: the board is passed in.

    app = App(board)
    while True:
        app.step(board.now_ms())
        board.wait(app.deadline_ms)

Records (pumpcore.store, each with a CRC and the generation of its set):
  calib   the µL-per-step calibration
  plan    the running plan
  state   schedule windows, clock, reservoir, alarms, battery, bolus history, request keys
  count   delivered steps, volume owed, the in-flight segment (fly_nl), the dose limiter's
          ledger (lim): rewritten before every segment, so after a power cut the account is
          never below what was pulsed and above it by at most one segment (max_segment_nl,
          10 µL by default); that segment joins the limiter's uncertain_nl at power-on
  head    the commit record: which generation each of the others must carry
save_state commits a set (Store.commit: all or none); see Persistence in docs/architecture.md.
A record that is missing, fails its CRC or is of another generation raises the critical MEMORY
alarm and puts the pump in its safe state (motor stopped) until a clinician programs a plan
(therapy data) or a calibration (calib).
"""

import gc
import sys

from . import alarms as al
from . import dose, loader, proto
from .battery import BatteryMonitor
from .delivery import ConstRate, Delivery
from .events import EventLog
from .limiter import Limiter
from .reservoir import Reservoir
from .schedule import DAY_MS, Clock
from .server import Server
from .store import Store

FIRMWARE = "0.1.0"  # as pumpcore.VERSION (bench/campaign_flash.py tags builds here)
_COMMAND_MODULES = ("clinician", "program", "patient", "status", "logpages")  # of pumpcore.loader.CALLS: the commands
MAX_SLEEP_MS = 6 * 3_600_000  # re-check calendar alarms at least this often
STALL_RETRIES = 3  # STALL after this many segments in a row end with DIAG asserted
# ... or once DIAG, read at a segment's end or at a battery sample while a segment runs, still
# reads stalled this long after it was first seen so (no drug reaches the patient)
STALL_CONFIRM_MS = 15 * 60_000
OCCLUSION_HYST_KPA = 20
BATTERY_SETTLE_MS = 300_000
_SMALL_HEAP = 192 * 1024  # bytes: below it, App sets gc.threshold (a board's heap, a tight rig)


class App:
    def __init__(self, board, keys=None, rand=None):
        self.board = board
        # modules loaded at boot: any pumpcore/hw module past loader.RESIDENT is dropped (_shed)
        self._n_mods = len(sys.modules)
        cfg = board.config
        self.cfg = cfg
        now = board.now_ms()
        self.store = Store(root=getattr(board, "fs_prefix", "") + "data")
        bc = cfg.get("battery", {})
        self.battery = BatteryMonitor(bc.get("eri_mv", 3300), bc.get("eos_mv", 3000),
                                      bc.get("brownout_mv", 2800), bc.get("hyst_mv", 50),
                                      bc.get("debounce", 8))
        self.battery_every_ms = bc.get("sample_ms", 3_600_000)
        tones = cfg.get("tones", {})
        from . import settings  # per-call: the patterns are checked and built at boot only

        self.alarms = al.Alarms(al.TonePlayer(settings.tones(
            hi_hz=tones.get("hi_hz", 880), lo_hz=tones.get("lo_hz", 660))))
        del settings
        self.events = EventLog(self.store, 200)  # in the store's file, not in RAM
        self.reservoir = Reservoir(cfg["reservoir_nl"])
        self.clock = Clock()
        self.step_pl = cfg["step_pl"]
        self.delivery = Delivery(self.step_pl, now)
        # the dose limiter: a safety channel apart from the schedule (pumpcore.limiter)
        self.limiter = Limiter(now, board.wall_epoch_s())
        self.max_hz = cfg.get("max_step_hz", 200)
        self.pullin_hz = cfg.get("pullin_step_hz", 50)
        self.plan = None
        self._crc_of = None  # plan_crc's cache: the plan _crc is the CRC of (None: no plan)
        self._crc = "00000000"
        self.sched = None
        self.therapy = "stopped"  # running | stopped | safe
        self.safe_reason = None
        self.steps = 0  # committed steps, lifetime
        self.pl_left = 0  # pL committed but not yet taken from the reservoir view (< 1 nL)
        self.seg = None  # [start_ms, count, first_us, interval_us, end_ms]
        self.seg_src = None  # the rate source the segment was planned from
        self.bench = None  # [ConstRate, steps_left] for motor.run
        self.boluses = []  # board ms of accepted patient boluses (last 24 h)
        self.lockout_until_ms = 0
        self.last_bolus = []  # [[req_id, result]] of the last 24 h's boluses (pumpcore.patient),
        # persisted: a retry, even of an older id, never doses twice
        # a patient bolus's delivery was halted (or the board reset) while it ran: its
        # bolus.done says so (pumpcore.patient clears it when a bolus starts)
        self.bolus_halted = True
        self.last_req = None  # ["id cmd args-CRC", result] of the last plan.set/refill
        self.gen = 0  # generation of the committed record set (the head)
        self.gens = {}  # {record: generation} as the head names them
        self.fallback = False
        self.stall_count = 0
        self.stall_ms = None  # board ms DIAG was first read stalled (None: last read clear)
        self.occluded = False
        self.next_battery_ms = now
        self.last_battery_ms = now
        self.next_tone_ms = None
        self.tone_hz = -1
        self.led_on = None
        self.deadline_ms = now
        self.dirty = False
        self._rand = rand or _urandom
        self.maint = False  # `maintenance` opened the REPL (Ctrl-C) until therapy.resume or a reset
        self._kbd = None  # Ctrl-C as last set on the board (None: not yet)
        # [failures, ms left, ceiling ms left] of the login throttle, from the state record
        a = self._overlay("load", now)
        if self.store.exists("crash"):
            from . import fault  # the boot-loop guard: transient, dropped at once (no hole)

            fault.boot_guard(self, now)
            del fault
            self._shed()
        if not self.clock.valid:
            rtc = board.wall_epoch_s()
            if rtc is not None:
                # a battery-backed RTC (DS3231, the virtual rig's): UTC until `clock sync`
                # gives the local offset
                self.clock.set(now, rtc, 0)
        self.server = Server(self, keys if keys is not None else self._overlay("load_keys"),
                             self._info, self._rand)
        srv = self.server
        if a:
            # failed logins survive a reset: resetting the board (DTR on an ESP32, a power
            # cut) must not reset the brute-force delay
            srv.auth_failures = a[0]
            srv.guard[1] = now  # the last failure: the connection's back-off decays from here
            srv.auth_until_ms = now + (a[1] if a[1] > 1000 else 1000) if a[0] else 0
            if len(a) > 2:
                srv.guard[0] = now + a[2]  # the rig-wide ceiling
        # a role ends with its connection: where the board sees the host close the port
        # (link_drops() counts it), at that moment; elsewhere after an idle time
        ld = getattr(board, "link_drops", None)
        self._link = ld() if ld is not None else None
        if self._link is None:
            srv.idle_ms = cfg.get("session_idle_ms", 300_000)
        self._auth_failures = srv.auth_failures
        self._event("reset", {"therapy": self.therapy}, now)
        # a blank board's first set includes its calibration: from then on a missing calib is
        # corruption, never a silent return to the board's default
        self.save_state(now, ("calib",) if not self.gens and self.therapy != "safe" else ())
        self._kbd_sync()
        self._shed()
        if loader.DROP and gc.mem_free() + gc.mem_alloc() < _SMALL_HEAP:
            # a small heap: a collection after every 2 KB allocated, so garbage (a command's
            # code, its decoded request) is reclaimed before new blocks spread over the heap
            # and what lives long is placed among fewer holes. On the virtual rig
            # (2026-12-05) the 30 days and restart and p9's restore then passed at 132 KB,
            # where without it 132 KB failed 3 runs of 4; with 2 KB rather than 4 KB (branch
            # heap2, 128 KB): the 30 days and restart 16 of 16 runs (4 KB: 43 of 45) and p9's
            # plan.set 4 of 4 (4 KB: 1 of 4), a 30-day run about 1.15 times as long. Not in a
            # large heap (the virtual rig's default 384 KB, the tests): there it only costs
            # time (with 4 KB, a 90-day simulation about 1.2 times as long)
            gc.threshold(2048)

    # ------------------------------------------------------------------ faults
    def crash(self, exc):
        """The loop failed: stop the motor with an exact account, log a FAULT event (the
        exception's type and place), raise the critical FAULT alarm, count the crash for the
        boot-loop guard, persist. Never raises. Returns True when main.py is to reset the
        board; False in the guard's safe state (motor off already: a reset would only loop, so
        the loop goes on, without logging every repeat)."""
        now = self.deadline_ms  # if even the clock fails
        try:
            gc.collect()
            now = self.board.now_ms()
            self.shutdown(now)
        except Exception:  # noqa: S110  (the reset follows whatever happens here)
            pass
        try:
            from . import fault

            return fault.record(self, exc, now)
        except Exception:  # noqa: BLE001
            return True

    def _kbd_sync(self):
        """Ctrl-C on the serial line interrupts the firmware (opens the REPL) only while
        therapy is stopped, or after `maintenance`; while it runs, 0x03 is plain data."""
        k = self.therapy == "stopped" or self.maint
        if k != self._kbd:
            self._kbd = k
            self.board.kbd_intr(k)

    # ------------------------------------------------------------------ persistence
    def save_count(self):
        """The account, rewritten in place before every segment (in the current set), with the
        periodic slots given (Schedule.slots): the first pulse of a periodic bolus is never
        before the record that it was started."""
        self.store.save_small("count", self._count(self.gen))

    def _count(self, gen):
        """The count record (the one place it is built)."""
        return {"steps": self.steps, "owed": self.delivery.owed, "t_ms": self.delivery.t_ms,
                "volume_nl": self._committed_volume_nl(), "pl_left": self.pl_left,
                "fly_nl": (self.seg[1] * self.step_pl + 999) // 1000
                if self.seg is not None else 0,
                "lim": self.limiter.to_dict(self.board.now_ms()),
                "slots": self.sched.slots() if self.sched else None, "gen": gen}

    def _committed_volume_nl(self):
        """The reservoir as it will be once the in-flight segment is done (the conservative
        view a power cut leaves behind)."""
        v = self.reservoir.volume_nl
        if self.seg is not None:
            v -= (self.seg[1] * self.step_pl + self.pl_left) // 1000
        return v if v > 0 else 0

    def save_state(self, now, also=()):
        """Commit the state and the account, with the records named in `also` ("plan",
        "calib"), as one set of a new generation (Store.commit: all or none)."""
        g = self.gen + 1
        recs = []
        if also and loader.DROP:
            gc.collect()  # programming: the largest set, written with the most code loaded
        for name in also:
            recs.append((name, {"plan": self.plan, "gen": g} if name == "plan"
                         else {"step_pl": self.step_pl, "gen": g}))
        r = self.reservoir
        recs.append(("state", {
            "saved_ms": now, "therapy": self.therapy, "safe_reason": self.safe_reason,
            "clock": self.clock.to_dict(),
            "sched": self.sched.to_dict() if self.sched else None,
            "res": {"low_nl": r.low_nl, "empty_nl": r.empty_nl,
                    "refill_by_epoch_s": r.refill_by_epoch_s,
                    "refilled_epoch_s": r.refilled_epoch_s},
            "alarms": self.alarms.to_dict(), "battery": self.battery.to_dict(),
            "boluses": self.boluses, "lockout_until_ms": self.lockout_until_ms,
            "last_bolus": self.last_bolus, "fallback": self.fallback,
            "auth": self._auth_state(now), "req": self.last_req, "gen": g,
        }))
        recs.append(("count", self._count(g)))
        gens = dict(self.gens)  # garbage once written; self.gens is updated in place after
        for name, _ in recs:    # the commit (nothing long-lived allocated: no heap holes)
            gens[name] = g
        self.store.commit({"gen": g, "gens": gens}, recs)
        gens = self.gens
        for name, _ in recs:
            gens[name] = g
        self.gen = g
        self.dirty = False

    # ------------------------------------------------------------------ helpers
    def limits(self):
        return {"max_nl_day": self.max_hz * 86_400 * self.step_pl // 1000,
                "reservoir_nl": self.cfg["reservoir_nl"],
                "pump_path_nl": self.cfg.get("pump_path_nl", 0), "step_pl": self.step_pl,
                "max_step_hz": self.max_hz, "pullin_step_hz": self.pullin_hz}

    def pullin_nl_day(self):
        return self.pullin_hz * 86_400 * self.step_pl // 1000

    def _info(self):
        return {"firmware": FIRMWARE, "board": self.cfg.get("board", "?"),
                "uid": getattr(self.board, "uid", "0"), "step_pl": self.step_pl,
                "limits": self.limits(), "mem_free": gc.mem_free() if loader.DROP else None}

    def plan_crc(self):
        """The running plan's CRC, computed once per plan (a plan is replaced, never edited)."""
        if self._crc_of is not self.plan:
            self._crc = dose.crc(self.plan)
            self._crc_of = self.plan
        return self._crc

    def epoch(self, now):
        return self.clock.epoch_s(now) if self.clock.valid else None

    def _event(self, kind, data, now):
        ev = self.events.new(kind, data, self.epoch(now), now)
        try:
            # appended to the log file (streamed compaction when it passes its bound)
            self.events.append(ev)
        except (OSError, MemoryError):
            # the log is best effort: a failed compaction is tried again at the next event,
            # and a failed log write must never stop the pump or crash its boot
            pass
        d = dict(data)
        d["epoch_s"] = ev["epoch_s"]
        d["ms"] = now
        self.server_event(kind, d)

    log_event = _event  # public, for the server's audit (logins, clinician commands)

    def server_event(self, kind, data):
        srv = getattr(self, "server", None)
        if srv is not None:
            srv.event(kind, data)

    def raise_alarm(self, kind, now):
        if self.alarms.raise_(kind, self.epoch(now)):
            self._event("alarm.raised", {"kind": kind, "critical": al.is_critical(kind)}, now)
            self.dirty = True
            self.next_tone_ms = now

    def clear_alarm(self, kind, now):
        if self.alarms.condition_cleared(kind, self.epoch(now)):
            self._event("alarm.cleared", {"kind": kind}, now)
            self.dirty = True
            self.next_tone_ms = now

    def enter_safe(self, now, reason, alarm):
        self.stop_motor(now)
        self.therapy = "safe"
        self.safe_reason = reason
        self.alarms.raise_(alarm, None)
        self.dirty = True

    # ------------------------------------------------------------------ motor
    def pulses_done(self, now):
        s = self.seg
        if s is None:
            return 0
        el = (now - s[0]) * 1000 - s[2]
        if el < 0:
            return 0
        n = el // s[3] + 1 if s[3] else s[1]
        return n if n < s[1] else s[1]

    def _settle(self, pulses):
        """`pulses` of the current segment happened: take them from the reservoir view."""
        pl = pulses * self.step_pl + self.pl_left
        self.reservoir.on_delivered(pl // 1000)
        self.pl_left = pl % 1000
        self.seg = None
        s = self.sched
        if s is not None:
            s.steps = self.steps  # the drug at the tip moves with the segment done
            if s.bridges and s.steps >= s.bridges[-1][1]:
                s.bridges = []  # the last old drug is out of the line
        self.limiter.settled()
        self.board.motor_enable(False)  # the driver draws no current between segments

    def stop_motor(self, now):
        """Abort the segment; uncommit the pulses that were not made."""
        if self.seg is None:
            return
        # account the ideal up to now with the source that drove this segment, before any
        # rebase: its pulses are owed against that ideal, not dropped with it
        src = self.seg_src
        if src is not None and now > self.delivery.t_ms:
            self.delivery.advance(now, src)
        made = self.board.motor_stop()
        count = self.seg[1]
        if made > count:
            made = count
        self.delivery.commit(made - count)
        self.limiter.abort(made)
        self.steps -= count - made
        if self.bench is not None:
            self.bench[1] += count - made
        self._settle(made)
        self.save_count()

    def halt(self, now):
        """Stop the motor with an exact account and integrate the ideal up to now with what
        drives delivery: the opening of every command that changes it. Returns that source
        (None: nothing drives delivery)."""
        self.stop_motor(now)
        src = self.source(now)
        if src is not None:
            self.delivery.advance(now, src)
        return src

    def source(self, now):
        """What drives delivery now, or None (no delivery: owed is not accumulated)."""
        if self.bench is not None:
            return self.bench[0]
        if self.therapy != "running" or self.plan is None or self.occluded:
            return None
        if self.battery.eos or self.alarms.condition_active(al.STALL):
            return None
        lvl = self.reservoir.level()
        minimum = ConstRate(self.plan["min_nl_day"]) if self.plan["min_nl_day"] else None
        if lvl == "empty":
            return minimum if self.plan["reservoir"]["on_empty"] == "min" else None
        if self.fallback:
            return minimum
        return self.sched

    def settle_slots(self, now):
        """Record the periodic slots the clock has reached (Schedule.settle; the count record
        keeps them) and log its events (a slot given late, skipped, or shown again)."""
        ev = self.sched.settle(now)
        if ev is not None:
            for kind, data in ev:
                self._event(kind, data, now)

    def _max_steps(self):
        seg_nl = self.cfg.get("max_segment_nl", 10_000)
        n = seg_nl * 1000 // self.step_pl
        if n < 1:
            n = 1
        # stop at the next reservoir threshold so its alarm sounds at the step that crosses it
        vol = self.reservoir.volume_nl
        for thr in (self.reservoir.low_nl, self.reservoir.empty_nl, 0):
            if vol > thr:
                need = ((vol - thr) * 1000 - self.pl_left + self.step_pl - 1) // self.step_pl
                if need < n:
                    n = need
                break
        if self.bench is not None and self.bench[1] < n:
            n = self.bench[1]
        b = self.sched.bridge_steps() if self.sched is not None else 0
        if 0 < b < n:
            n = b  # a segment ends where the next drug reaches the tip (its own rate)
        return n if n > 0 else 0

    def _drive(self, now):
        """Start the next segment if the motor is idle. Returns the wake time without one."""
        src = self.source(now)
        sched = self.sched
        if src is not sched and sched is not None and sched.overlays:
            self.bolus_halted = True  # the bolus's volume is not being given
        if src is None:
            self.delivery.pause(now)
            return None
        self.delivery.advance(now, src)
        lim = self.limiter
        if lim.held:
            self.delivery.drop_fraction()  # what came due while held is dropped, not rushed
            if sched is not None and sched.overlays:
                self.bolus_halted = True
        if sched is not None and sched.overlays:
            sched.prune(now)
            if not sched.overlays and self.last_bolus:
                # the patient bolus's time is over: its event, with the volume it added
                r = self.last_bolus[-1][1]
                self._event("bolus.done", {"dose_ng": r["dose_ng"], "volume_nl": r["volume_nl"],
                                           "halted": self.bolus_halted}, now)
        if src is sched:
            self.settle_slots(now)  # saved with the count below, before the next pulse
        seg, wake = self.delivery.plan_segment(now, src, self._max_steps(),
                                               1_000_000 // self.pullin_hz)
        if seg is None:
            if self.bench is not None and self.bench[1] <= 0:
                self.bench = None
                self.delivery.rebase(now)
                self.delivery.owed = 0
            return wake
        count, first_us, interval_us = seg
        if interval_us < 1_000_000 // self.max_hz and count > 1:
            interval_us = 1_000_000 // self.max_hz
        p = self.plan
        count = lim.allow(now, count, first_us, interval_us, self.step_pl,
                          p["conc_ng_ml"] if p else 0, p["caps"] if p else None)
        w = lim.why
        if w is not None:
            if not self.alarms.condition_active(al.CAP_REACHED):
                self._event("cap.reached", {"window": w[0], "ng": w[1], "cap_ng": w[2]}, now)
                self.raise_alarm(al.CAP_REACHED, now)
            if not count:
                self.delivery.drop_fraction()
                return w[3]
        elif self.alarms.condition_active(al.CAP_REACHED):
            self.clear_alarm(al.CAP_REACHED, now)
        end_us = now * 1000 + first_us + (count - 1) * interval_us
        self.seg = [now, count, first_us, interval_us, (end_us + 999) // 1000]
        self.seg_src = src
        self.delivery.commit(count)
        lim.commit()
        self.steps += count
        if self.bench is not None:
            self.bench[1] -= count
        self.save_count()  # before the first pulse: a power cut can only over-count
        self.board.motor_enable(True)
        self.board.motor_start(count, first_us, interval_us, True)
        return None

    # ------------------------------------------------------------------ the loop
    def _auth_state(self, now):
        srv = getattr(self, "server", None)
        if srv is None:
            return None
        g = srv.guard[0] - now
        if not srv.auth_failures and g <= 0:
            return None
        return [srv.auth_failures, srv.auth_until_ms - now if srv.auth_until_ms > now else 0,
                g if g > 0 else 0]

    def step(self, now):
        srv = self.server
        data = self.board.read_serial()
        if data:
            if self._link is not None:
                # asked when bytes come (a round trip on the virtual rig): a close of the port
                # before them ends the session before they are read
                n = self.board.link_drops()
                if n != self._link:
                    self._link = n
                    srv.end(True)  # the session ends with the connection
            srv.feed(data, now)
        if srv.auth_failures != self._auth_failures:
            # (the rig-wide ceiling moves only with a failure, which changes this count)
            self._auth_failures = srv.auth_failures
            self.dirty = True  # saved with the state record by tick()
        self.tick(now)
        self.server.write_output(self.board.write_serial)
        self._kbd_sync()
        self._shed()
        f = self.server.fault
        if f is not None:
            # a command raised (it was answered INTERNAL): the loop's fault handling takes over
            self.server.fault = None
            raise f

    def _shed(self):
        """Drop the per-call modules imported for one job (pumpcore.loader.drop)."""
        if loader.DROP and len(sys.modules) != self._n_mods:
            if loader.drop():
                gc.collect()
            # what stays (sources, other packages) stays from now on: no scan of sys.modules
            # at every step. (!=, not >: a per-call function may drop modules itself, the
            # restore does, and a count below the mark would hide the next module loaded)
            self._n_mods = len(sys.modules)

    def tick(self, now):
        s = self.seg
        moved = s is not None and now >= s[4] and not self.board.motor_busy()
        if moved:
            if self.seg_src is not None and s[4] > self.delivery.t_ms:
                # the ideal up to the segment's end with what drove it: the pulses it made are
                # covered by it even when nothing drives delivery from here on (a pause), and
                # the tip may change with the drug it pushed (bridge)
                self.delivery.advance(s[4], self.seg_src)
            self._settle(s[1])
        # a wake-up that happens anyway within half a period early takes the battery sample
        bat = now >= self.next_battery_ms - (self.next_battery_ms - self.last_battery_ms) // 2
        st = self.stall_ms
        if moved or s is not None and (bat or st is not None and now >= st + STALL_CONFIRM_MS):
            self._stall(now, moved)
        if bat:
            self._battery(now)
            if self.occluded:
                self._pressure(now)  # waiting for the line to clear
        if moved:
            self._pressure(now)  # pressure only builds while the motor moves
        self._levels(now)
        wake = None
        if self.seg is None:
            wake = self._drive(now)
        if self.seg is not None:
            wake = self.seg[4]
            if self.stall_ms is not None and self.stall_ms + STALL_CONFIRM_MS < wake:
                wake = self.stall_ms + STALL_CONFIRM_MS
        if self.dirty:
            self.save_state(now)
        dl = now + MAX_SLEEP_MS
        if wake is not None and wake < dl:
            dl = wake
        if self.next_battery_ms < dl:
            dl = self.next_battery_ms
        tone_next = self._tones(now)
        if tone_next is not None and tone_next < dl:
            dl = tone_next
        rb = self.reservoir.refill_by_epoch_s
        if rb is not None and self.clock.valid and not self.alarms.condition_active(al.REFILL_BY):
            t = self.clock.base_ms + rb * 1000 - self.clock.epoch_ms
            if now < t < dl:
                dl = t
        self.deadline_ms = dl if dl > now else now + 1

    def _stall(self, now, ended):
        """Read DIAG at the end of a segment (`ended`) or while one runs; raise STALL (the
        motor stopped) after STALL_RETRIES stalled segments in a row or STALL_CONFIRM_MS."""
        if not self.board.stalled():
            self.stall_ms = None
            if ended and self.stall_count:
                self.stall_count = 0
                self.clear_alarm(al.STALL, now)
            return
        if self.stall_ms is None:
            self.stall_ms = now
        if ended:
            self.stall_count += 1
            self._event("stall", {"episode": self.stall_count}, now)
        if self.stall_count >= STALL_RETRIES or now - self.stall_ms >= STALL_CONFIRM_MS:
            self.stop_motor(now)
            self.raise_alarm(al.STALL, now)

    def _battery(self, now):
        self.last_battery_ms = now
        changes = self.battery.sample(self.board.battery_mv(), now, self.epoch(now))
        # hourly, but every 5 minutes while a reading is settling (debounce under way)
        self.next_battery_ms = now + (BATTERY_SETTLE_MS if self.battery.settling()
                                      else self.battery_every_ms)
        for what, on in changes:
            self.dirty = True
            if what == "eri":
                (self.raise_alarm if on else self.clear_alarm)(al.ERI, now)
            elif what == "eos":
                if on:
                    self.stop_motor(now)
                (self.raise_alarm if on else self.clear_alarm)(al.EOS, now)
            elif what == "fault" and on:
                self.fallback = True
                self.stop_motor(now)
                self.raise_alarm(al.BATTERY_FAULT, now)

    def _pressure(self, now):
        limit = self.cfg.get("pressure", {}).get("occlusion_kpa", 100)
        kpa = self.board.line_kpa()
        if not self.occluded and kpa >= limit:
            self.occluded = True
            self.stop_motor(now)
            self.raise_alarm(al.OCCLUSION, now)
        elif self.occluded and kpa < limit - OCCLUSION_HYST_KPA:
            self.occluded = False
            self.delivery.rebase(now)
            self.clear_alarm(al.OCCLUSION, now)

    def _levels(self, now):
        lvl = self.reservoir.level()
        if self.plan is None:
            return
        if lvl == "empty":
            self.raise_alarm(al.EMPTY, now)
        elif al.EMPTY in self.alarms and self.alarms.condition_active(al.EMPTY):
            self.clear_alarm(al.EMPTY, now)
        if lvl in ("low", "empty"):
            self.raise_alarm(al.LOW, now)
        elif self.alarms.condition_active(al.LOW):
            self.clear_alarm(al.LOW, now)
        ep = self.epoch(now)
        if self.reservoir.refill_due(ep):
            self.raise_alarm(al.REFILL_BY, now)
        needs_clock = self.plan["basal"]["kind"] == "flex" or self.plan["periodic"] is not None
        if needs_clock and not self.clock.valid:
            self.raise_alarm(al.CLOCK, now)

    def _tones(self, now):
        if self.next_tone_ms is not None and now < self.next_tone_ms:
            return self.next_tone_ms
        f, led, nxt = self.alarms.output(now)
        if f != self.tone_hz:
            self.board.tone(f)
            self.tone_hz = f
        if led != self.led_on:
            self.board.led(led)
            self.led_on = led
        self.next_tone_ms = nxt
        return nxt

    def shutdown(self, now):
        """Interrupted (Ctrl-C for flashing): stop pulses, keep an exact account."""
        self.stop_motor(now)
        self.board.tone(0)
        self.board.led(False)

    # ------------------------------------------------------------------ commands
    def call(self, cmd, args, role, req_id, now):
        if self.therapy == "safe":
            from . import fault  # transient: the boot-loop guard refuses most commands

            fault.check_cmd(self, cmd)
        name = cmd.replace(".", "_")
        if name == "status":
            return self.cmd_status(args, now, req_id)
        if name == "plan_set":
            # the plan rules and the code that applies a plan are loaded one after the other,
            # never together: plan.set is the command that needs the most heap
            args = {"plan": self.check_plan(args["plan"])}
        if loader.module_of(name) in _COMMAND_MODULES:
            return self._overlay(name, args, now, req_id)
        raise proto.CommandError(proto.UNKNOWN_CMD, "unknown command " + cmd)

    def _overlay(self, fn_name, *args):
        """<module>.<fn_name>(self, *args) from the per-call module pumpcore.loader.CALLS names
        for it (pumpcore.program, .patient, .clinician, .restore), loaded for this call only: on MicroPython the precompiled modules (.mpy, as `pumprig flash`
        installs them) the call brought in are dropped after it (_shed), so a running pump
        keeps only its working code in the heap; a .mpy loads again in about a millisecond on
        the unix port. Sources (.py) stay loaded: compiling them again at every command would
        cost more heap than it frees."""
        if loader.DROP:
            # the request's decoder (pumpcore.parse) goes first; the code about to load gets
            # the largest free blocks there are
            self._shed()
            gc.collect()
        try:
            return loader.run(fn_name, self, *args)
        finally:
            self._shed()

    def check_plan(self, plan, limits=None, prefix=""):
        """The normalised copy of `plan` if it passes the plan rules within `limits` (default:
        this rig's), else CommandError(PLAN_INVALID) naming the field and the reason (after
        `prefix`). The two stages of pumpcore.plan.validate, each module loaded for its stage
        alone: the rules (pumpcore.plan), then the worst windows (pumpcore.worst)."""
        out, ctx = self._check_stage(plan, limits or self.limits(), prefix, False)
        return self._check_stage(out, ctx, prefix, True)

    def _check_stage(self, plan, arg, prefix, windows):
        if loader.DROP:
            self._shed()
            gc.collect()
        try:
            if windows:
                from . import worst

                err = worst.check(plan, arg)
                if err is None:
                    return plan
                field, reason = err["field"], err["reason"]
            else:
                from . import plan as planmod

                try:
                    return planmod.shape(plan, arg)
                except planmod.PlanError as e:
                    field, reason = e.field, e.reason
            raise proto.CommandError(proto.PLAN_INVALID, "%s%s: %s" % (prefix, field, reason))
        finally:
            self._shed()

    def retry_after_stall(self, now):
        self.stall_count = 0
        self.stall_ms = None
        self.clear_alarm(al.STALL, now)
        self.delivery.rebase(now)

    def cmd_status(self, args, now, req_id):
        """Resident: the command a patient's and the host's tools poll (loading it for each
        call cost 0.3 ms of import and two collections: docs/benchmarks.md, `session`)."""
        ep = self.epoch(now)
        src = self.source(now)
        rate = src.rate_nl_day(now) if src is not None else 0
        steps = self.steps
        vol = self.reservoir.volume_nl
        if self.seg is not None:
            done = self.pulses_done(now)
            steps += done - self.seg[1]
            vol -= (done * self.step_pl + self.pl_left) // 1000
        if vol < 0:
            vol = 0
        low_ep = None
        if ep is not None and rate > 0:
            # Reservoir.seconds_to(low_nl, rate) without loading pumpcore.reservoirfill
            above = self.reservoir.volume_nl - self.reservoir.low_nl
            low_ep = ep + (-(-above * 86_400 // rate) if above > 0 else 0)
        mode = "none"
        if self.bench is not None:
            mode = "bench"
        elif self.sched is not None:
            mode = self.sched.activity(now)
        p = self.plan
        bat = self.battery
        # keyword names are interned (qstrs); "quoted" keys of 10 characters or more would each
        # be a string object of ~70 bytes in the resident heap
        return dict(
            firmware=FIRMWARE, protocol=proto.PROTOCOL_VERSION,
            board=self.cfg.get("board", "?"), mode=mode, therapy=self.therapy,
            safe_reason=self.safe_reason, rate_nl_day=rate, reservoir_nl=vol,
            delivered_steps=steps, delivered_nl=steps * self.step_pl // 1000,
            step_pl=self.step_pl, battery_mv=bat.avg_mv, battery_state=bat.state,
            fallback=self.fallback, alarms=self.alarms.active(), plan_crc=self.plan_crc(),
            drug=p["drug"] if p else None, conc_ng_ml=p["conc_ng_ml"] if p else None,
            epoch_s=ep, ms=now, low_epoch_s=low_ep,
            refill_by_epoch_s=self.reservoir.refill_by_epoch_s,
            lockout_until_epoch_s=self.clock.epoch_s(self.lockout_until_ms)
            if self.clock.valid and self.lockout_until_ms > now else None,
            boluses_24h=self.boluses_24h(now), eri_days_left=bat.eri_days_left(ep),
            stall_detect=getattr(self.board, "stall_detect", None), gen=self.gen,
            uncertain_nl=self.limiter.uncertain_nl, log_next=self.events.next_seq,
        )

    def boluses_24h(self, now):
        cut = now - DAY_MS
        if self.boluses and self.boluses[0] <= cut:
            self.boluses = [t for t in self.boluses if t > cut]
        return len(self.boluses)


def _urandom(n):
    import os

    return os.urandom(n)
