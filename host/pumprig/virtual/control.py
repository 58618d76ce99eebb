"""Client of a virtual rig's control socket (JSON lines, one request, one reply)."""

import json
import socket

from pumprig.errors import SimError


class WorldClient:
    """Reads the world's measurements and injects faults. `path` is the rig's control.sock."""

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

    def call(self, op, wait_s=None, **args):
        """One request; returns its result or raises SimError."""
        req = dict(args)
        req["op"] = op
        s = self._connect()
        s.settimeout(wait_s if wait_s is not None else self.timeout_s)
        try:
            s.sendall((json.dumps(req) + "\n").encode())
            while b"\n" not in self._buf:
                data = s.recv(65536)
                if not data:
                    raise SimError("the virtual rig closed its control socket")
                self._buf += data
        except socket.timeout as e:
            self.close()
            raise SimError("the virtual rig did not answer %r in time" % op) from e
        except OSError as e:
            self.close()
            raise SimError("control socket error during %r: %s" % (op, e)) from e
        line, self._buf = self._buf.split(b"\n", 1)
        reply = json.loads(line)
        if not reply.get("ok"):
            raise SimError("virtual rig: %s failed: %s" % (op, reply.get("error")))
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
