"""Request dispatch: bytes in, frames out; roles, retries and errors (pure, both runtimes).

    srv = Server(app, keys, info, rand)
    srv.feed(data, now_ms)        # whatever arrived on the serial line
    srv.write_output(write)       # the frames to write back, each to write(bytes)
    srv.event("alarm.raised", {"kind": "LOW"})

app.call(cmd, args, role, req_id, now_ms) -> dict (raises proto.CommandError) and
app.plan_crc() -> str. keys: {"patient": key, "clinician": key} (bytes or hex). info: dict (or
a callable returning one) merged into the hello result: firmware, board, uid, step_pl, limits.
rand(n) -> n random bytes.

`hello` and `auth` run in pumpcore.session, imported for the call (not resident: a login
happens once a session); it returns values and the Server assigns its login state from them.
The login throttle is plain data here: auth_failures (failed attempts in a row on this
connection), auth_until_ms (board time before which `auth` is refused with THROTTLED), guard
(the rig-wide ceiling and the audit's counters: pumpcore.session).

A session: after `auth`, the role applies only to requests signed with the session key and a
sequence number above the last one (_signed; docs/protocol.md). A request without the trailer
runs with role none. The session ends (end()) at the next `hello`, a failed `auth`, end(True)
(the board saw the host close the port) or, where the board cannot see that (idle_ms set),
after idle_ms without a signed request. Few fields, one list: this object is resident.
"""

import gc
from binascii import hexlify
from hashlib import sha256

from pumpcore import const, loader, proto

# Requests remembered for retries. A client waits for each answer, so a retry is of its latest
# request; 4 leave room for a late retry, and each entry holds a response line (up to 1 KB).
_CACHE_SIZE = const(4)
_OUT_MAX = const(8192)  # queued bytes beyond which events are dropped (responses never)
_ID_PREFIX = const(40)  # bytes kept of an over-long line, to read its id
# Answers that may change on a retry: never replayed from the cache.
_TRANSIENT = (proto.BAD_CRC, proto.TOO_LONG, proto.BAD_FRAME, proto.THROTTLED, proto.BUSY)


class Server:
    def __init__(self, app, keys, info, rand):
        from pumpcore import session  # at boot: not resident (dropped after the App boots)

        self.app = app
        self.keys = session.key_table(keys)  # {role: key bytes}
        self.info = info
        self.rand = rand
        self.idle_ms = None  # a session quiet this long ends (None: the board sees the link)
        # role, nonce (the challenge), sess, cache, auth_failures, auth_until_ms: end()
        self.end(True)
        # [rig-wide ceiling's drain time, last failure, last auth.fail logged, failures not
        # logged, per role the last auth.ok logged and logins since] (board ms; see
        # pumpcore.session)
        self.guard = [0, 0, None, 0, {}]
        self._buf = bytearray()
        self._discard = None  # prefix of an over-long line being discarded, or None
        self._out = []
        self._out_bytes = 0
        self._seq = 0
        self.dropped_events = 0
        self.fault = None  # an exception a command raised, for the loop's fault handling
        self.audit = False  # the request in hand is a clinician command (logged after it)

    # ------------------------------------------------------------------ I/O

    def feed(self, data, now_ms):
        """Take bytes from the line; answer every complete line."""
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        if 3 in data:
            # Ctrl-C while it is plain data (therapy running, App._kbd_sync): never part of a
            # frame (printable ASCII only), so dropped, and the frame around it still counts
            data = bytes(data).replace(b"\x03", b"")
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            end = n if nl < 0 else nl
            if self._discard is not None:
                if len(self._discard) < _ID_PREFIX:
                    self._discard += data[start : min(end, start + _ID_PREFIX)]
            else:
                self._buf += data[start:end]
                if len(self._buf) >= proto.MAX_LINE:
                    self._discard = bytes(self._buf[:_ID_PREFIX])
                    self._buf = bytearray()
            if nl < 0:
                return
            start = nl + 1
            if self._discard is not None:
                fid = proto.read_id(self._discard)
                self._discard = None
                if fid is not None:
                    self._reply_err(fid, proto.TOO_LONG, "line longer than %d bytes" % proto.MAX_LINE)
                continue
            line = bytes(self._buf)
            self._buf = bytearray()
            self._line(line, now_ms)

    def write_output(self, write):
        """Hand each queued frame to write(bytes), without joining them first (on a board
        heap a large join may find no contiguous block)."""
        out = self._out
        if not out:
            return 0
        self._out = []
        self._out_bytes = 0
        for line in out:
            write(line)
        return len(out)

    def event(self, name, data=None):
        """Queue an unsolicited event frame; returns its sequence number (0 if dropped)."""
        self._seq = self._seq + 1 if self._seq < 999999999 else 1
        try:
            line = proto.encode_event(self._seq, name, data)
        except proto.CommandError:
            line = proto.encode_event(self._seq, name, {"truncated": True})
        if self._out_bytes + len(line) > _OUT_MAX:
            self.dropped_events += 1
            return 0
        self._queue(line)
        return self._seq

    def end(self, link_down=False):
        """The role ends: role none, no session, no challenge, no remembered requests. With
        link_down (the host closed the port), the next connection also starts without this
        one's back-off, under the same rig-wide ceiling."""
        self.role = proto.ROLE_NONE
        # the session after `auth`: [ipad, opad (pumpcore.auth.pads of the session key), the
        # last sequence number accepted, board time of the last signed request], or None
        self.sess = None
        self.nonce = None  # the challenge of the last hello, until an auth tries it
        self.cache = []  # requests remembered for retries: [(id, crc, response line)]
        if link_down:
            self.auth_failures = 0
            self.auth_until_ms = 0

    # ------------------------------------------------------------ internals

    def _queue(self, line):
        self._out.append(line)
        self._out_bytes += len(line)

    def _reply_err(self, fid, code, message):
        self._queue(proto.encode_err(fid, code, message))

    def _line(self, line, now_ms):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return
        f = proto.decode(line)
        if f.error is not None:
            self._reply_err(f.id if f.id is not None else proto.NO_ID, f.error, f.message)
            return
        if f.kind != proto.REQUEST:
            # id 0: the answer is to no request of the client's (docs/protocol.md)
            self._reply_err(proto.NO_ID, proto.BAD_FRAME, "only requests are accepted")
            return
        if f.id == proto.NO_ID:
            self._reply_err(proto.NO_ID, proto.BAD_ARGS, "request id 0 is reserved")
            return
        s = self.sess
        if s is not None and self.idle_ms is not None and now_ms - s[3] > self.idle_ms:
            # idle too long: the session ends, its record of ids with it (no replay of an
            # answered frame is answered from it after this)
            self.end()
            if f.seq is not None:
                self._reply_err(f.id, proto.AUTH_REQUIRED, "session expired: hello and auth again")
                return
        for fid, crc, resp in self.cache:
            if fid == f.id:
                if crc == f.crc:
                    self._queue(resp)  # a retry: answer again, do not execute again
                else:
                    self._reply_err(f.id, proto.BAD_FRAME, "id reused for a different request")
                return
        role = proto.ROLE_NONE
        if f.seq is not None:
            err = self._signed(line, f, now_ms)
            if err is not None:
                self._reply_err(f.id, err[0], err[1])  # not remembered: nothing was run
                return
            role = self.role
        if f.name == "hello":
            self.cache = []  # a new session: ids of the old one mean nothing now
        code = None
        self.audit = False
        try:
            result = self._dispatch(f.id, f.name, f.body, now_ms, role)
            resp = proto.encode_ok(f.id, result)
        except proto.CommandError as e:
            code = e.code
            resp = proto.encode_err(f.id, e.code, e.message)
        except MemoryError:
            code = proto.INTERNAL
            resp = proto.encode_err(f.id, proto.INTERNAL, "out of memory")
        except Exception as e:  # the app failed: answer, then the loop takes the fault
            code = proto.INTERNAL
            resp = proto.encode_err(f.id, proto.INTERNAL, "internal error (%s)" % type(e).__name__)
            self.fault = e  # App.step raises it after the answer is out (main loop: FAULT)
        if self.audit:
            # audit: who ran which clinician command, and how it ended (after it ran: the
            # heaviest commands get the heap as it was)
            self.app.log_event("cmd", {"cmd": f.name, "role": role, "code": code}, now_ms)
        if code not in _TRANSIENT:
            if len(self.cache) >= _CACHE_SIZE:
                self.cache.pop(0)
            self.cache.append((f.id, f.crc, resp))
        self._queue(resp)

    def _signed(self, line, f, now_ms):
        """None if the signed request f (the bytes of line) is this session's next one, else
        (code, message). The MAC is checked before the sequence number and in constant time."""
        s = self.sess
        if s is None:
            return proto.AUTH_REQUIRED, "no session: hello and auth first"
        at = f.mac_at
        h = sha256(s[0])
        h.update(memoryview(line)[:at])
        d = h.digest()
        h = sha256(s[1])
        h.update(d)
        d = hexlify(h.digest()[:16])
        diff = 0
        for i in range(proto.MAC_HEX):
            diff |= d[i] ^ line[at + i]
        if diff:
            return proto.BAD_MAC, "wrong session MAC"
        if f.seq <= s[2]:
            return proto.REPLAY, "sequence number %d not above %d" % (f.seq, s[2])
        s[2] = f.seq
        s[3] = now_ms
        return None

    def _dispatch(self, req_id, cmd, args, now_ms, role):
        if cmd == "status" and not args and (role == proto.ROLE_PATIENT
                                             or role == proto.ROLE_CLINICIAN):
            # the command polled most: answered resident, no dictionary loaded (its check is
            # this line: patient role or more, no arguments)
            self.audit = False
            return self.app.call(cmd, args, role, req_id, now_ms)
        if loader.DROP:
            # the decoder (pumpcore.parse, 7 KB) is done with: the dictionary does not load
            # beside it (the next collection frees it)
            loader.drop()
        from pumpcore import commands  # per call: the dictionary

        need, err, why = commands.check(cmd, args, role)
        del commands  # nothing here keeps it: it goes with the decoder (loader.drop)
        if err is not None:
            raise proto.CommandError(err, why)
        # audit: who ran which clinician command, and how it ended (_line)
        self.audit = role == proto.ROLE_CLINICIAN and need == role
        if cmd == "hello" or cmd == "auth":
            if loader.DROP:
                # the decoder and the dictionary go first: a login is the boot's heap peak
                loader.drop()
                gc.collect()
            from pumpcore import session  # for this call only (see pumpcore.session)

            # the login state after it, and the answer (pumpcore.session)
            (self.auth_failures, self.auth_until_ms, self.nonce, self.role, self.sess, self.cache,
             self.guard, r) = session.hello(self) if cmd == "hello" else session.login(
                 self, args, now_ms)
            if isinstance(r, proto.CommandError):
                raise r
            return r
        result = self.app.call(cmd, args, role, req_id, now_ms)
        return {} if result is None else result
