"""A pumpcore Server on a real pty, served from a thread: what the client talks to in tests."""

import os
import pty
import select
import threading
import tty

from pumpcore import auth, proto, server
from pumpcore import plan as core

UID = "e6614103e7452d2f"
PATIENT_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
CLINICIAN_KEY = "c1" * 32
KEYS = {UID: {"patient": PATIENT_KEY, "clinician": CLINICIAN_KEY}}


def take_output(srv):
    """The frames the Server queued since the last call, as bytes (Server.write_output)."""
    out = []
    srv.write_output(out.append)
    return b"".join(out)


class FakeApp:
    def __init__(self):
        self.calls = []
        self.boluses = 0
        self.plan = None
        self.fixed_crc = True  # plan.set answers a wrong CRC (to test that the CLI notices)
        self.gen = 1  # therapy generation: plan.set and refill commit a new one
        self.bump = True  # False: commands answer without committing (a torn rig)
        self.therapy = "running"
        self.conc = 2000000
        self.reservoir_nl = 18500000
        self.events = []

    def log_event(self, kind, data, now_ms):
        self.events.append((kind, data))

    def plan_crc(self):
        return "1234abcd"

    def call(self, cmd, args, role, req_id, now_ms):
        self.calls.append(cmd)
        if cmd == "status":
            return {
                "firmware": "0.1.0", "protocol": 1, "board": "sim", "mode": "continuous",
                "therapy": self.therapy, "rate_nl_day": 200000, "reservoir_nl": self.reservoir_nl,
                "delivered_steps": 6000, "delivered_nl": 1500000, "step_pl": 250000,
                "gen": self.gen, "safe_reason": None,
                "battery_mv": 3650, "battery_state": "ok", "alarms": ["CLOCK"],
                "plan_crc": "1234abcd", "drug": "baclofen", "conc_ng_ml": self.conc,
                "epoch_s": 1767225600, "ms": now_ms, "low_epoch_s": None,
                "refill_by_epoch_s": None, "lockout_until_epoch_s": None, "boluses_24h": 0,
            }  # fmt: skip
        if cmd == "bolus":
            self.boluses += 1
            return {"dose_ng": 100000, "volume_nl": 10000, "dur_s": 600, "started_epoch_s": self.boluses}
        if cmd == "plan.get":
            crc = "1234abcd" if self.fixed_crc or self.plan is None else core.crc(self.plan)
            return {"plan": self.plan, "plan_crc": crc, "gen": self.gen,
                    "therapy": self.therapy}
        if cmd == "plan.set":
            self.plan = args["plan"]
            if self.bump:
                self.gen += 1
                self.therapy = "running"
            crc = "1234abcd" if self.fixed_crc else core.crc(self.plan)
            return {"plan": self.plan, "plan_crc": crc}
        if cmd == "refill":
            bridge = 0
            if self.bump:
                self.gen += 1
                self.reservoir_nl = args["volume_nl"]
                if args.get("conc_ng_ml") not in (None, self.conc):
                    self.conc = args["conc_ng_ml"]
                    bridge = 300000
            return {"reservoir_nl": args["volume_nl"], "bridge_nl": bridge}
        if cmd == "alarms":
            return {"alarms": [{"kind": "CLOCK", "critical": False, "active": True,
                                "acked": False, "since_epoch_s": 0}]}  # fmt: skip
        return {}


class PtyRig:
    """Serve `srv` on a pty; `self.path` is the slave to open. `drop` makes the rig swallow
    the next n requests without answering (a lossy line)."""

    def __init__(self, app=None, protocol=None, keys=None):
        self.app = app or FakeApp()
        self.now_ms = 1_000_000
        info = {"firmware": "0.1.0", "board": "sim", "uid": UID, "step_pl": 250000}
        k = keys if keys is not None else KEYS[UID]
        self.srv = server.Server(self.app, k, info, os.urandom)
        if protocol is not None:
            orig = self.srv._dispatch

            def dispatch(req_id, cmd, args, now_ms, role):
                res = orig(req_id, cmd, args, now_ms, role)
                if cmd == "hello":
                    res["protocol"] = protocol
                return res

            self.srv._dispatch = dispatch
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self.received = []
        self.drop = 0
        self.garbage = b""
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            self.received.append(data)
            if self.drop:
                self.drop -= 1
                continue
            self.srv.feed(data, self.now_ms)
            out = take_output(self.srv)
            if out:
                if self.garbage:
                    out, self.garbage = self.garbage + out, b""
                os.write(self.master, out)

    def push_event(self, name, data):
        os.write(self.master, proto.encode_event(1, name, data))

    def close(self):
        self._stop = True
        self._t.join(1)
        os.close(self.master)
        os.close(self._slave)


def mac(key, nonce, role, cnonce):
    return auth.mac_hex(key, nonce, role, UID, cnonce)
