"""Talk to a rig (board or virtual) over any pyserial URL: handshake, roles, retries.

    with Client("/dev/ttyACM0", role="clinician") as rig:
        print(rig.status()["reservoir_nl"])

Every failure is a pumprig.errors class: PortError (no such port, busy, link dropped),
RigTimeout, ProtocolError (not our firmware, wrong version), AuthError (no key, wrong key,
role not allowed), DeviceError(code, message) (the rig refused the request).
"""

import os
import time

import serial
from pumpcore import auth, proto

from pumprig import keys as keystore
from pumprig.errors import AuthError, DeviceError, PortError, ProtocolError, RigTimeout

_AUTH_CODES = (proto.AUTH_REQUIRED, proto.FORBIDDEN, proto.AUTH_FAILED, proto.THROTTLED,
               proto.BAD_MAC, proto.REPLAY)
_RX_MAX = 65536  # bytes of a line without newline kept (REPL noise); beyond that, dropped
_EVENTS_MAX = 1000
_POLL_S = 0.05  # longest a read blocks before the deadline is checked again
# Requests the firmware recognises by their persisted id after a reset (docs/protocol.md): if
# the rig answers AUTH_REQUIRED to one (it reset, the session is gone), the client logs in
# again and resends it with the same id; it is answered from the commit, never applied twice.
_REPLAYABLE = ("plan.set", "refill", "bolus")
# reads change nothing: sent again in a new session when the old one ended under them (the rig
# reset, or saw the close of the program that had the port before, e.g. a `monitor` poll)
_READS = ("status", "plan.get", "calib.get", "alarms", "log", "clock.get")

# USB vendor ids whose serial is native USB CDC: the firmware only sends while DTR is set,
# and (ESP32-S2/S3 USB-Serial-JTAG) DTR alone does not reset the chip.
_NATIVE_USB_VIDS = (0x2E8A, 0x303A)


def _line_states(port):
    """(dtr, rts) to set before open. UART bridges (CP210x, CH340, FTDI) wire DTR/RTS to an
    ESP32's EN and IO0: both released, so opening the port never resets the board."""
    if "://" in port:
        return False, False
    try:
        from serial.tools import list_ports

        real = os.path.realpath(port)
        for p in list_ports.comports():
            if p.device in (port, real) and p.vid in _NATIVE_USB_VIDS:
                return True, False
    except Exception:  # port listing is a nicety here; never fatal
        pass
    return False, False


# how long opening a port that another process has locked waits for it to be let go
PORT_WAIT_S = 3.0


class Client:
    def __init__(self, port, role="clinician", keys=None, timeout=2.0, home=None, baudrate=115200):
        if not port:
            raise PortError("no port given: use --port PORT or set PUMPRIG_PORT (see `pumprig list`)")
        if role not in (None, "none", "patient", "clinician"):
            raise AuthError("unknown role %r: use patient or clinician" % (role,))
        self.port = port
        self.role = None if role == "none" else role
        self.keys = keys
        self.timeout = timeout
        self.home = home
        self.baudrate = baudrate
        self.info = None  # the hello result
        self.ser = None
        self._rx = bytearray()
        self._events = []
        self._prefix = "h%s" % os.urandom(3).hex()
        self._n = 0
        self._pad = None  # the session key's HMAC pads after auth (pumpcore.auth.pads)
        self._seq = 0  # the last request sequence number used in this session

    # -------------------------------------------------------------- session

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def open(self):
        if self.ser is not None:
            return self  # already open (e.g. `with Client(...).open() as c`)
        self._open_port()
        try:
            self.handshake()
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        self._pad = None  # the rig ends the session when the port closes
        ser, self.ser = self.ser, None
        if ser is not None:
            try:
                ser.close()
            except Exception:  # closing a dropped link must not mask the real error
                pass
        self._release()

    def _open_port(self):
        from pumprig import farm

        port, self._lease = farm.open_port(self.port)  # lg:PLACE: acquired until close()
        try:
            self._open_serial(port)
        except BaseException:
            self._release()
            raise

    def _release(self):
        lease, self._lease = getattr(self, "_lease", None), None
        if lease is not None:
            lease.release()

    def _open_serial(self, port):
        is_url = "://" in port
        if not is_url and not os.path.exists(port):
            raise PortError("no such port %s (see `pumprig list`)" % port)
        dtr, rts = _line_states(port)
        # a port locked by another pumprig is waited for a little: `monitor` holds it only
        # for each poll, so a command run beside it gets its turn
        deadline = time.monotonic() + PORT_WAIT_S
        while True:
            try:
                kw = {"baudrate": self.baudrate, "timeout": _POLL_S, "do_not_open": True}
                if not is_url:
                    kw["exclusive"] = True
                ser = serial.serial_for_url(port, **kw)
                ser.dtr = dtr
                ser.rts = rts
                ser.open()
                break
            except (serial.SerialException, OSError, ValueError) as e:
                msg = str(e)
                if "lock" in msg or "busy" in msg.lower():
                    if time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    raise PortError("port %s is busy (another pumprig, mpremote or terminal?)" % self.port) from None
                raise PortError("cannot open %s: %s" % (self.port, msg)) from None
        self.ser = ser
        try:
            ser.reset_input_buffer()
        except Exception:  # loop:// and sockets may not support it; nothing to discard then
            pass

    def handshake(self):
        try:
            return self._handshake()
        except AuthError as e:
            # the rig saw the close of the program that had the port before us only after our
            # hello (a `monitor` poll lets go just as we open): that close ended our fresh
            # challenge. Nothing was tried with a key: log in once more.
            if getattr(e, "code", None) != proto.AUTH_FAILED or "no challenge" not in str(e):
                raise
        return self._handshake()

    def _handshake(self):
        hello = self.request("hello")
        version = hello.get("protocol")
        if version != proto.PROTOCOL_VERSION:
            raise ProtocolError(
                "the rig on %s speaks protocol %r, this host speaks %d: flash matching firmware "
                "(pumprig flash) or update pumprig" % (self.port, version, proto.PROTOCOL_VERSION)
            )
        self.info = hello
        if self.role is not None:
            uid = hello.get("uid")
            key = self._key_for(uid, self.role)
            nonce = hello.get("nonce", "")
            cnonce = os.urandom(auth.NONCE_BYTES).hex()
            try:
                mac = auth.mac_hex(key, nonce, self.role, uid, cnonce)
                pad = auth.pads(auth.session_key(key, nonce, cnonce, self.role, uid))
            except auth.AuthKeyError as e:
                raise AuthError("the %s key for rig %s is unusable: %s" % (self.role, uid, e)) from None
            # Retrying auth is safe: the resent frame has the same id, so a rig that already
            # ran it replays its verdict instead of spending a second nonce.
            self.request("auth", {"role": self.role, "mac": mac, "cnonce": cnonce})
            self._pad = pad
            self._seq = 0
        return hello

    def _key_for(self, uid, role):
        k = self.keys
        if k is None or isinstance(k, (str, os.PathLike)) and os.path.isdir(str(k)):
            k = keystore.KeyStore(self.home if k is None else k)
        if isinstance(k, keystore.KeyStore):
            return k.key(uid, role)
        if isinstance(k, (str, bytes)):
            return k
        if isinstance(k, dict):
            entry = k.get(uid, k)
            if isinstance(entry, dict) and isinstance(entry.get(role), str):
                return entry[role]
        raise AuthError("no %s key for rig %s" % (role, uid))

    # -------------------------------------------------------------- requests

    def _next_id(self):
        self._n += 1
        return "%s-%d" % (self._prefix, self._n)

    def frame(self, cmd, args=None, req_id=None):
        """(id, line) of the next request: signed with the session key and the next sequence
        number once logged in (docs/protocol.md), plain before. Sending the same line again
        is a retry: the rig answers it from its record, never runs it twice."""
        if req_id is None:
            req_id = self._next_id()
        try:
            if cmd == "hello" or self._pad is None:
                if cmd == "hello":
                    self._pad = None  # hello ends the session on the rig
                return req_id, proto.encode_request(req_id, cmd, args)
            self._seq += 1
            return req_id, auth.sign_request(self._pad, req_id, cmd, args, self._seq)
        except proto.CommandError as e:
            raise ProtocolError("cannot send %s: %s" % (cmd, e.message)) from None

    def request(self, cmd, args=None, retries=2):
        """Send one request and return its result; a retry reuses the id (and the sequence
        number), so the rig executes it at most once."""
        if self.ser is None:
            raise PortError("not connected")
        req_id, line = self.frame(cmd, args)
        relogged = False
        for attempt in range(retries + 1):
            self._write(line)
            f = self._wait_response(req_id, time.monotonic() + self.timeout)
            if f is None:
                continue  # timed out: resend the same id
            if f.name == "ok":
                return f.body
            code, message = f.body.get("code"), f.body.get("message", "")
            if code == proto.BAD_CRC and attempt < retries:
                continue  # our frame was damaged on the way: resend
            if (code == proto.AUTH_REQUIRED and (cmd in _REPLAYABLE or cmd in _READS)
                    and self.role is not None
                    and not relogged):
                relogged = True
                self.handshake()  # the rig reset under the request: log in again, resend
                req_id, line = self.frame(cmd, args, req_id)  # same id, the new session
                continue
            if code in _AUTH_CODES:
                err = AuthError("%s: %s (%s)" % (cmd, message, code))
                err.code = code
                raise err
            raise DeviceError(code, message)
        if getattr(self, "_at_repl", False) or b">>>" in self._rx:
            err = RigTimeout(
                "%s is at the MicroPython REPL, not running the pumprig firmware (mpremote "
                "leaves a board there): restart it with `mpremote connect %s reset`"
                % (self.port, self.port))
            err.at_repl = self.port  # the CLI tells a blank board (`pumprig flash`) apart
            raise err
        raise RigTimeout(
            "no answer to %s from %s after %d tries of %.1f s: is the pumprig firmware running?"
            % (cmd, self.port, retries + 1, self.timeout)
        )

    def _write(self, data):
        try:
            self.ser.write(data)
        except (serial.SerialException, OSError) as e:
            raise PortError("lost the link to %s: %s" % (self.port, e)) from None

    def _read_some(self, deadline):
        """What is waiting now, else block until some bytes arrive or the deadline passes
        (no fixed sleeps). b"" only once the deadline has passed."""
        try:
            n = self.ser.in_waiting
            if n:
                return self.ser.read(n)
            if deadline - time.monotonic() <= 0:
                return b""
            data = self.ser.read(1)  # returns as soon as a byte arrives, or after _POLL_S
            if data:
                n = self.ser.in_waiting
                if n:
                    data += self.ser.read(n)
            return data
        except (serial.SerialException, OSError) as e:
            raise PortError("lost the link to %s: %s" % (self.port, e)) from None

    def _frames(self, deadline):
        """Yield decoded frames until the deadline; skips lines that are not frames."""
        while True:
            nl = self._rx.find(b"\n")
            if nl >= 0:
                line = bytes(self._rx[: nl + 1])
                del self._rx[: nl + 1]
                f = proto.decode(line)
                if f.error is None and f.kind == proto.REQUEST:
                    # our own frame echoed back: by a Python prompt if with CR LF (a loopback
                    # echoes it unchanged)
                    if line.endswith(b"\r\n"):
                        self._at_repl = True
                elif f.error is None:
                    yield f
                elif b"SyntaxError" in line or b">>>" in line:
                    self._at_repl = True  # our frame was typed into a Python prompt
                continue
            data = self._read_some(deadline)
            if not data:
                if time.monotonic() >= deadline:
                    return
                continue  # a quiet _POLL_S: keep waiting until the deadline
            self._rx += data
            if len(self._rx) > _RX_MAX and b"\n" not in self._rx:
                del self._rx[:]

    def _wait_response(self, req_id, deadline):
        for f in self._frames(deadline):
            if f.kind == proto.EVENT:
                self._push_event(f)
            elif f.kind == proto.RESPONSE and f.id == req_id:
                return f
        return None

    def _push_event(self, f):
        if len(self._events) >= _EVENTS_MAX:
            del self._events[0]
        self._events.append({"seq": int(f.id), "name": f.name, "data": f.body})

    def events(self, wait_s=0.0):
        """Events pushed by the rig since the last call (reads what is waiting, or up to
        wait_s for more); each {seq, name, data}."""
        if self.ser is not None:
            end = time.monotonic() + wait_s
            while True:
                for f in self._frames(end):
                    if f.kind == proto.EVENT:
                        self._push_event(f)
                        break
                else:
                    break  # the deadline passed with nothing more waiting
                end = time.monotonic()  # got one: take what is already waiting, then return
        out, self._events = self._events, []
        return out

    # -------------------------------------------------------------- commands

    def hello(self):
        return self.request("hello")

    def status(self):
        return self.request("status")

    def plan_get(self):
        return self.request("plan.get")

    def plan_set(self, plan):
        return self.request("plan.set", {"plan": plan})

    def bolus(self):
        return self.request("bolus")

    def refill(self, volume_nl, conc_ng_ml=None, refill_by_epoch_s=None):
        args = {"volume_nl": int(volume_nl)}
        if conc_ng_ml is not None:
            args["conc_ng_ml"] = int(conc_ng_ml)
        if refill_by_epoch_s is not None:
            args["refill_by_epoch_s"] = int(refill_by_epoch_s)
        return self.request("refill", args)

    def calib_get(self):
        return self.request("calib.get")

    def calib_set(self, step_pl):
        return self.request("calib.set", {"step_pl": int(step_pl)})

    def alarms(self):
        return self.request("alarms")["alarms"]

    def ack(self, kind=None):
        return self.request("ack", {} if kind is None else {"kind": kind})["acked"]

    def alarm_test(self):
        return self.request("alarm.test")

    def log(self, since=None, limit=None):
        args = {}
        if since is not None:
            args["since"] = int(since)
        if limit is not None:
            args["limit"] = int(limit)
        return self.request("log", args)

    def log_all(self, since=None, page=None):
        """Every log event from `since` on, fetched page by page."""
        events = []
        while True:
            res = self.log(since, page)
            batch = res.get("events") or []
            events.extend(batch)
            nxt = res.get("next")
            if not batch or nxt is None or nxt == since:
                return events
            since = nxt

    def clock_get(self):
        return self.request("clock.get")

    def clock_set(self, epoch_s, offset_s, next_change_epoch_s=None, next_offset_s=None):
        args = {"epoch_s": int(epoch_s), "offset_s": int(offset_s)}
        if next_change_epoch_s is not None:
            args["next_change_epoch_s"] = int(next_change_epoch_s)
            args["next_offset_s"] = int(next_offset_s)
        return self.request("clock.set", args)

    def therapy_stop(self):
        return self.request("therapy.stop")

    def therapy_resume(self):
        return self.request("therapy.resume")

    def motor_run(self, steps, rate_nl_day=None):
        args = {"steps": int(steps)}
        if rate_nl_day is not None:
            args["rate_nl_day"] = int(rate_nl_day)
        return self.request("motor.run", args)
