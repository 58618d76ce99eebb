"""A virtual rig's control socket (JSON lines, one request, one reply): the server the launcher
runs (ControlServer) and the client the host's tools use (WorldClient).

A request is {"op": name, ...arguments}; the reply {"ok": true, "result": ...} or {"ok": false,
"error": text}. A failure goes back to the client; the rig keeps running.
"""

import json
import os
import selectors
import socket

from pumprig.errors import SimError


class ControlServer:
    """Serves the control socket inside the launcher's select loop. `rig` is the launcher's
    Rig: its world, status_info(), power_cut(), power_on() and external_reset()."""

    def __init__(self, path, sel, rig):
        self.path = path
        self.sel = sel
        self.rig = rig
        self.clients = {}
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)  # this user's only; other hosts go through the farm's relay
        self.sock.listen(8)
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ, "accept")

    def accept(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        self.clients[conn] = b""
        self.sel.register(conn, selectors.EVENT_READ, "client")

    def drop(self, conn):
        self.clients.pop(conn, None)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def close(self):
        for c in list(self.clients):
            self.drop(c)
        try:
            self.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def on_client(self, conn):
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop(conn)
            return
        buf = self.clients.get(conn, b"") + data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            self.request(conn, line)
        if conn in self.clients:
            self.clients[conn] = buf

    def reply(self, conn, obj):
        data = (json.dumps(obj) + "\n").encode()
        try:
            conn.setblocking(True)
            conn.sendall(data)
            conn.setblocking(False)
        except OSError:
            self.drop(conn)

    def request(self, conn, line):
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "advance":
                self.advance(conn, req)
                return
            result = self.handle(op, req)
        except Exception as e:     # any failure goes back to the client, the rig keeps running
            self.reply(conn, {"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
            return
        self.reply(conn, {"ok": True, "result": result})

    def advance(self, conn, req):
        w = self.rig.world
        now = w.now_us()
        if req.get("to_ms") is not None:
            target = int(req["to_ms"]) * 1000
        elif req.get("by_ms") is not None:
            target = now + int(req["by_ms"]) * 1000
        else:
            raise ValueError("advance needs to_ms or by_ms")
        target = max(target, now)

        def done(err):
            if err:
                self.reply(conn, {"ok": False, "error": err})
            else:
                self.reply(conn, {"ok": True, "result": w.measure()})

        w.start_advance(target, done, float(req.get("timeout_s", 60)))

    def handle(self, op, req):
        rig = self.rig
        w = rig.world
        if op == "status":
            st = w.status()
            st.update(rig.status_info())
            return st
        if op == "measure":
            return w.measure()
        if op == "set_warp":
            w.set_warp(bool(req.get("on", True)))
            return {"warp": w.warp, "time_ms": w.now_us() // 1000}
        if op == "set_epoch":
            w.set_epoch(int(req["epoch_s"]))
            return {"epoch_s": w.epoch_s()}
        if op == "fault":
            w.fault(stall=req.get("stall"), occlusion=req.get("occlusion"),
                    battery_mv=req.get("battery_mv"), true_step_pl=req.get("true_step_pl"),
                    kill_at_ms=req.get("kill_at_ms"),
                    clear_battery=bool(req.get("clear_battery")),
                    garble_waits=req.get("garble_waits"))
            return w.status()
        if op == "power_cut":
            rig.power_cut("power")
            return w.measure()
        if op == "power_on":
            rig.power_on()
            return w.measure()
        if op == "reset":
            rig.external_reset(req.get("cause") or "external")
            return w.measure()
        if op == "segments":
            return w.segment_log(int(req.get("since", 0)))
        if op == "wdt_resets":
            return w.resets.get("wdt", 0) + w.resets.get("wdt_hang", 0)
        if op == "history":
            return [list(h) for h in w.history]
        raise ValueError("unknown op %r" % (op,))


class WorldClient:
    """Reads the world's measurements and injects faults. `path` is the rig's control.sock."""

    what = "virtual rig"  # who failed, in a failed request's message

    def __init__(self, path, timeout_s=10.0):
        self.path = path
        self.timeout_s = timeout_s
        self._sock = None
        self._buf = b""

    def _connect(self):
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.path)
            except OSError as e:
                s.close()
                raise SimError("cannot reach the virtual rig at %s: %s" % (self.path, e)) from e
            self._sock = s
        return self._sock

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _readline(self, s):
        while b"\n" not in self._buf:
            data = s.recv(65536)
            if not data:
                raise SimError("the virtual rig closed its control socket")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _encode(self, req):
        return (json.dumps(req) + "\n").encode()

    def _decode(self, line):
        return json.loads(line)

    def call(self, op, wait_s=None, **args):
        """One request; returns its result or raises SimError."""
        req = dict(args)
        req["op"] = op
        s = self._connect()
        s.settimeout(wait_s if wait_s is not None else self.timeout_s)
        try:
            s.sendall(self._encode(req))
            line = self._readline(s)
        except socket.timeout as e:
            self.close()
            raise SimError("the virtual rig did not answer %r in time" % op) from e
        except OSError as e:
            self.close()
            raise SimError("control socket error during %r: %s" % (op, e)) from e
        try:
            reply = self._decode(line)
        except Exception:
            self.close()
            raise
        if not reply.get("ok"):
            raise SimError("%s: %s failed: %s" % (self.what, op, reply.get("error")))
        return reply.get("result")

    def status(self):
        return self.call("status")

    def measure(self):
        return self.call("measure")

    def advance(self, to_ms=None, by_ms=None, timeout_s=60.0):
        """Warp: let virtual time run to to_ms (or by by_ms), granting the firmware's wait
        deadlines on the way; returns measure() at the target."""
        if to_ms is None and by_ms is None:
            raise SimError("advance needs to_ms or by_ms")
        return self.call("advance", wait_s=timeout_s + 5, to_ms=to_ms, by_ms=by_ms,
                         timeout_s=timeout_s)

    def set_warp(self, on=True):
        return self.call("set_warp", on=bool(on))

    def set_epoch(self, epoch_s):
        return self.call("set_epoch", epoch_s=int(epoch_s))

    def fault(self, stall=None, occlusion=None, battery_mv=None, true_step_pl=None,
              kill_at_ms=None, clear_battery=False, garble_waits=None):
        """garble_waits=n: the firmware's next n waits are answered with a garbled time line,
        which raises inside its loop (fault injection with no hook in the firmware)."""
        return self.call("fault", stall=stall, occlusion=occlusion, battery_mv=battery_mv,
                         true_step_pl=true_step_pl, kill_at_ms=kill_at_ms,
                         clear_battery=clear_battery, garble_waits=garble_waits)

    def power_cut(self):
        return self.call("power_cut")

    def power_on(self):
        return self.call("power_on")

    def reset(self):
        """An external hard reset (the RUN pin)."""
        return self.call("reset")

    def segments(self, since=0):
        return self.call("segments", since=since)

    @property
    def wdt_resets(self):
        return self.call("wdt_resets")

    def history(self):
        return self.call("history")
