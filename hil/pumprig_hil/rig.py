"""One rig under test: the firmware (a clinician session over the protocol), its instruments,
and the helpers the suites share (known state, clock, traces, raw frames).

    hr = HilRig.start(spec, home)      # a virtual rig is started here; a bench rig is opened
    hr.normalize()                     # between tests: cheap known state
    hr.fresh()                         # pristine records (only for tests that need it)
    hr.close()
"""

from __future__ import annotations

import contextlib
import os
import time

from pumpcore import proto
from pumprig import protocol
from pumprig.client import Client
from pumprig.errors import AuthError, DeviceError, PortError, PumprigError, RigTimeout
from pumprig.virtual.link import VirtualClient

from .instruments import BenchInstruments, SimInstruments

# The pump clock every test starts from unless it sets its own: Monday 2027-01-04 00:00 UTC.
EPOCH0 = 1_799_020_800
STEP_NL = 250  # nominal; tests read the rig's own step_pl


class _Checked:
    """Client whose every answer (ok or err, log pages entry by entry) and every event is
    validated against the protocol schema (pumprig.protocol, issue 13): an answer of the
    firmware that does not fit fails the test that got it with SchemaViolation."""

    def frame(self, cmd, args=None, req_id=None):
        rid, line = super().frame(cmd, args, req_id)
        sent = self.__dict__.setdefault("_sent_cmds", {})
        if len(sent) > 64:
            sent.clear()
        sent[rid] = cmd
        return rid, line

    def _wait_response(self, req_id, deadline):
        f = super()._wait_response(req_id, deadline)
        if f is not None:
            cmd = self.__dict__.get("_sent_cmds", {}).get(req_id)
            found = protocol.check_response(cmd, f)
            if not found and cmd == "log" and f.name == "ok":
                for ev in f.body["events"]:
                    found += protocol.check_log_entry(ev)
            protocol.require(found, "the answer to %s (%s %s)" % (cmd, f.name, f.body))
        return f

    def _push_event(self, f):
        super()._push_event(f)
        protocol.require(protocol.check_event(f.name, f.body), "event %s %s" % (f.name, f.body))


class _CheckedClient(_Checked, Client):
    """Client for a bench rig, every answer and event checked against the schema."""


class _ConsoleClient(_Checked, VirtualClient):
    """Client for virtual rigs (pumprig.virtual.link's connect-and-retry policy), every answer
    checked against the schema, that keeps what the board printed besides frames, for the
    report of a firmware crash."""

    CONSOLE_BYTES = 65536

    def _read_some(self, deadline):
        data = super()._read_some(deadline)
        if data:
            buf = getattr(self, "console", b"") + data
            self.console = buf[-self.CONSOLE_BYTES:]
        return data

    def console_text(self):
        """What the board printed that was not a frame (a traceback, the REPL banner)."""
        lines = getattr(self, "console", b"").decode("ascii", "replace").splitlines()
        return "\n".join(x for x in lines if x.strip() and x[:1] not in "=!"
                         and x.strip() not in (">>>", "..."))


class RigError(PumprigError):
    """The harness could not bring the rig to a known state."""


class HilRig:
    def __init__(self, spec, home, vrig=None, inst=None):
        self.spec = spec
        self.home = home
        self.vrig = vrig
        self.inst = inst
        self.client = None
        self.port = None
        self.trace = []          # [(t_s, steps_fwd, label)] recorded by the running test
        self.band = []           # [(t_s, ideal_steps, tolerance_steps)] the test's expectation
        self.clock = None        # (rig ms, epoch_s) when the test last set the pump clock
        self.role = "clinician"
        self.crashes = []        # consoles of firmware crashes seen (virtual rigs)

    # ------------------------------------------------------------------ lifetime
    @classmethod
    def start(cls, spec, home, inst=None):
        """inst: a bench's instruments when they are not this host's GPIO adapter (a labgrid
        place's, pumprig_hil.farm.PlaceLock.instruments)."""
        if spec.is_sim:
            from pumprig.virtual.rig import open_rig

            vrig = open_rig(warp=True, name="hil-%s-%d" % (spec.name, os.getpid()), home=home)
            try:
                hr = cls(spec, home, vrig, SimInstruments(vrig))
                hr.port = vrig.link
                hr.connect()
            except BaseException:
                vrig.stop()
                raise
            return hr
        hr = cls(spec, home, None, None)
        hr.inst = inst if inst is not None else BenchInstruments(spec)
        try:
            hr.inst.clear_faults()
            hr.connect(wait_s=15)
        except BaseException:
            hr.inst.close()
            raise
        return hr

    @property
    def target(self):
        return "sim" if self.spec.is_sim else "bench"

    @property
    def features(self):
        return self.inst.features

    def close(self):
        with contextlib.suppress(Exception):
            if self.client is not None:
                self.client.close()
        self.client = None
        if self.inst is not None:
            self.inst.close()
        if self.vrig is not None:
            self.vrig.stop()
            self.vrig = None

    # ------------------------------------------------------------------ link
    def _resolve_port(self):
        if self.spec.is_sim:
            return self.vrig.link
        if self.spec.serial:
            from serial.tools import list_ports

            for p in list_ports.comports():
                if (p.serial_number or "").lower() == self.spec.serial.lower():
                    return p.device
            raise PortError("no USB serial port with serial number %s (yet)" % self.spec.serial)
        return self.spec.port

    def connect(self, wait_s=5.0, role=None):
        """(Re)open the link if needed and log in; retries while the board boots. After a
        failed `auth` the board throttles: wait the delay out (virtually on a sim rig)."""
        role = role or self.role
        end = time.monotonic() + wait_s
        last = None
        while True:
            try:
                if self.client is None:
                    self.port = self._resolve_port()
                    cls = _ConsoleClient if self.spec.is_sim else _CheckedClient
                    self.client = cls(self.port, role=role, home=self.home, timeout=2.0)
                    self.client.open()
                else:
                    self.client.role = None if role == "none" else role
                    self.client.handshake()
                self.role = role
                return self.client
            except AuthError as e:
                last = e
                if getattr(e, "code", None) != proto.THROTTLED:
                    raise
                self.inst.advance_s(2.0 if self.spec.is_sim else 1.0)
            except (PortError, RigTimeout) as e:
                last = e
                if self.vrig is not None and self._revive():
                    continue
                if self.client is not None and isinstance(e, PortError):
                    with contextlib.suppress(Exception):
                        self.client.close()
                    self.client = None
                time.sleep(0.02 if self.spec.is_sim else 0.5)
            if time.monotonic() > end:
                raise RigError("the rig %s did not answer: %s" % (self.spec.name, last))

    def _revive(self):
        """A virtual rig whose firmware fell out of its loop into the REPL (an uncaught
        exception: its traceback is in the console text) is power-cycled, once per call, so
        that the next tests still run; the crash is kept in `crashes` for the report."""
        st = self.vrig.world.status()
        if st.get("state") != "repl":
            return False
        console = getattr(self.client, "console_text", lambda: "")()
        self.crashes.append(console[-3000:])
        self.inst.power_cut()
        self.inst.power_on()
        return True

    @contextlib.contextmanager
    def as_role(self, role):
        """Run a block in another session role on the same link (the port is exclusive)."""
        self.connect(role=role)
        try:
            yield self.client
        finally:
            self.connect(role="clinician")

    def frame(self, req_id, cmd, args=None):
        """A request line with this id, signed in the current session (requests after `auth`
        carry the session MAC and the next sequence number: docs/protocol.md); sent again
        unchanged it is a retry."""
        return self.client.frame(cmd, args, req_id=req_id)[1]

    def raw(self, line: bytes, wait_s=0.5):
        """Send raw bytes on the link; return the frames that came back up to the first
        response (events kept aside). For protocol robustness tests. On a virtual rig an
        empty line follows every 50 ms of silence (see pumprig.virtual.link)."""
        c = self.client
        c._write(line)
        out = []
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            step = min(end, time.monotonic() + VirtualClient.NUDGE_S)
            for f in c._frames(step):
                if f.kind == proto.EVENT:
                    c._push_event(f)
                    continue
                out.append(f)
                if f.kind == proto.RESPONSE:
                    return out
            if self.spec.is_sim:
                c._write(b"\n")
        return out

    # ------------------------------------------------------------------ known states
    # conditions the protocol cannot clear once the injected cause is gone: a latched STALL
    # (no segment runs to clear it), the brown-out fallback, EOS with its hysteresis, MEMORY
    STICKY = ("STALL", "BATTERY_FAULT", "EOS", "MEMORY")

    def normalize(self, allow_fresh=True):
        """Cheap known state between tests: power on, no injected fault, logged in, therapy
        stopped, alarms acknowledged, the pump clock at EPOCH0. Falls back to fresh() when
        the last test left a state only new records clear."""
        self.inst.clear_faults()
        self.connect(wait_s=10 if self.spec.is_sim else 20, role="clinician")
        self.client.therapy_stop()
        self.client.ack()
        if allow_fresh:
            st = self.client.status()
            active = {a["kind"] for a in self.client.alarms() if a["active"]}
            if st["therapy"] == "safe" or st.get("fallback") or active & set(self.STICKY):
                self.fresh()
                return
        self.set_clock(EPOCH0)
        self.client.events()
        self.trace = []
        self.band = []

    def fresh(self):
        """Pristine records (no plan, counters, alarms, bolus history or battery history),
        keys kept. Virtual rig: power cut, wipe data/, power on. Bench: interrupt the
        firmware through the raw REPL, delete the records, reset."""
        if self.spec.is_sim:
            self.vrig.wipe_records()  # here, or on a farm's exporter host (pumprig_hil/farm.py)
        else:
            from pumprig.flash import _mpremote, wait_up

            if self.client is not None:
                self.client.close()
                self.client = None
            port = self._resolve_port()
            _mpremote(port, ["exec", _WIPE, "+", "reset"], timeout=60)
            wait_up(port, timeout_s=15)
        self.normalize(allow_fresh=False)

    def board_config(self):
        """The board json (board/boards/*.json) of the firmware under test: thresholds and
        periods the suites scale their waits by."""
        import json

        from pumprig.firmware import board_config_path

        name = {"sim": "sim", "rp2040": "pico", "esp32": "esp32"}.get(
            (self.client.info or {}).get("board"), "pico")
        return json.loads(board_config_path(name).read_text())

    def set_clock(self, epoch_s, offset_s=0, next_change_epoch_s=None, next_offset_s=None):
        """Set the pump clock (and, on a virtual rig, its battery-backed RTC to match, which
        the firmware trusts after a reset)."""
        if self.vrig is not None:
            self.vrig.world.set_epoch(epoch_s)
        r = self.client.clock_set(epoch_s, offset_s, next_change_epoch_s, next_offset_s)
        self.clock = (self.now_ms(), epoch_s)
        return r

    def epoch_now(self):
        t_ms, ep = self.clock
        return ep + (self.now_ms() - t_ms) // 1000

    # ------------------------------------------------------------------ time and traces
    def now_ms(self):
        return int(round(self.inst.now_s() * 1000))

    def steps(self):
        return self.inst.steps()

    def sample(self, label=None):
        s = self.inst.steps()
        self.trace.append((self.inst.now_s(), s.fwd, label))
        return s

    def expect(self, ideal_steps, tolerance_steps):
        """Record what the test allows now: the ideal counter reading (same origin as the
        trace's) and the tolerance around it, drawn as a band on the trace's plot."""
        self.band.append((self.inst.now_s(), ideal_steps, tolerance_steps))

    def run_for(self, seconds, samples=12):
        """Let `seconds` pass in `samples` chunks, recording the instrument trace."""
        if not self.trace:
            self.sample("start")
        chunk = seconds / samples
        for _ in range(samples):
            self.inst.advance_s(chunk)
            self.sample()
        return self.inst.steps()

    def program(self, plan, fill_nl, conc_ng_ml=None, refill_by_epoch_s=None):
        """Refill and program a plan (therapy starts running)."""
        self.client.refill(fill_nl, conc_ng_ml, refill_by_epoch_s)
        return self.client.plan_set(plan)

    def log_all(self):
        """Every event of the rig's log. Pages stay small and shrink when a page would not fit
        in one frame (Client.log_all's default page of 20 can exceed 1024 bytes)."""
        events, since, limit = [], 0, 8
        while True:
            try:
                r = self.client.log(since, limit)
            except DeviceError as e:
                if e.code == proto.TOO_LONG and limit > 1:
                    limit //= 2
                    continue
                raise
            batch = r.get("events") or []
            events.extend(batch)
            nxt = r.get("next")
            if not batch or nxt is None or nxt == since:
                return events
            since = nxt

    def events_of(self, kind, since_seq=0):
        return [e for e in self.log_all() if e["kind"] == kind and e["seq"] > since_seq]

    # ------------------------------------------------------------------ reports
    def event_log_text(self):
        """The rig's event log, one line each (best effort: a dead link says why)."""
        try:
            if not self.inst.powered():
                return "(the rig was powered off when the test ended)"
            self.connect(wait_s=3)
            evs = self.log_all()
        except Exception as e:  # a report must never fail the run a second time
            return "(event log unavailable: %s)" % e
        lines = []
        for e in evs:
            lines.append("%4d  epoch %-11s ms %-12s %-16s %s"
                         % (e.get("seq"), e.get("epoch_s"), e.get("ms"), e.get("kind"),
                            e.get("data")))
        return "\n".join(lines) or "(empty)"

    def readings_text(self):
        try:
            r = self.inst.readings()
        except Exception as e:  # same: best effort
            return "(instrument readings unavailable: %s)" % e
        try:
            if self.client is not None and self.inst.powered():
                st = self.client.status()
                r["firmware_status"] = {k: st.get(k) for k in (
                    "therapy", "mode", "rate_nl_day", "reservoir_nl", "delivered_steps",
                    "battery_mv", "battery_state", "alarms", "epoch_s")}
        except Exception as e:  # same
            r["firmware_status"] = "unavailable: %s" % e
        text = "\n".join("%-22s %s" % (k, v) for k, v in r.items())
        console = getattr(self.client, "console_text", lambda: "")()
        if console:
            text += "\n--- board console (non-frame output) ---\n" + console[-2000:]
        for i, crash in enumerate(self.crashes):
            text += "\n--- firmware crash %d (rig power-cycled to go on) ---\n%s" % (i + 1, crash)
        return text


_WIPE = """
import os
for f in os.listdir('data'):
    if f != 'keys.json':
        os.remove('data/' + f)
"""
