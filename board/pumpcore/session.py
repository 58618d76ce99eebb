"""The login path of the Server: the `hello` and `auth` commands (docs/protocol.md).

A login happens once a session: Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Everything it leaves behind is plain data on the
Server: the keys (srv.keys, from key_table at boot), the nonce (srv.nonce), the role
(srv.role), the session (srv.sess: the session key's pads, the last sequence number, the last
signed request's time) and the throttle: this connection's failures in a row
(srv.auth_failures) and the board time before which its next attempt is refused
(srv.auth_until_ms), and srv.guard (the rig-wide ceiling's drain time, the last failure, the
last auth.fail logged, the failures not logged). Logins go to the App's event log (audit).
Nothing may keep a reference to this module or to its functions.
"""

from pumpcore import auth, const, proto

AUDIT_FAIL_MS = const(60000)  # at most one auth.fail event a minute (the others are counted)
# at most one auth.ok event per role in 10 min (the others are counted in the next one): a
# monitor logging in at every poll would push every other event out of the 200-event log
AUDIT_OK_MS = const(600000)
# srv.guard
_G_UNTIL = const(0)  # the rig-wide ceiling's drain time (pumpcore.auth.global_wait_ms)
_G_FAIL = const(1)  # board time of the last failure
_G_LOGGED = const(2)  # board time of the last auth.fail logged, or None
_G_UNLOGGED = const(3)  # failures since then, not logged
_G_OK = const(4)  # per role: [board time of its last auth.ok logged, logins since, not logged]


def end(srv):
    """The role ends: role none, no session, no challenge, no remembered requests."""
    srv.role = proto.ROLE_NONE
    srv.sess = None
    srv.nonce = None
    srv.cache = []


def link_down(srv):
    """The host closed the port: the session ends; the next connection starts without this
    one's back-off, under the same rig-wide ceiling."""
    end(srv)
    srv.auth_failures = 0
    srv.auth_until_ms = 0


def key_table(keys):
    """{role: key bytes} of keys ({role: bytes or hex}, or None): an unusable key is a missing
    key, and that role cannot log in."""
    table = {}
    for role in (proto.ROLE_PATIENT, proto.ROLE_CLINICIAN):
        k = keys.get(role) if keys else None
        if k is not None:
            try:
                table[role] = auth.key_bytes(k)
            except auth.AuthKeyError:
                pass
    return table


def hello(srv):
    """A new session: role none, a fresh nonce; the board's info for the client."""
    info = srv.info() if callable(srv.info) else srv.info
    res = dict(info) if info else {}
    end(srv)
    srv.nonce = auth.new_nonce(srv.rand)
    res["protocol"] = proto.PROTOCOL_VERSION
    res["nonce"] = srv.nonce
    res["plan_crc"] = srv.app.plan_crc()
    limits = dict(res.get("limits") or {})
    limits["max_line"] = proto.MAX_LINE
    limits["max_id"] = proto.MAX_ID
    res["limits"] = limits
    return res


def login(srv, args, now_ms):
    """auth {role, mac, cnonce}: one attempt per nonce; a per-connection back-off under a
    rig-wide ceiling. Logs auth.ok / auth.fail (never a secret) through srv.app.log_event."""
    role = args.get("role")
    mac = args.get("mac")
    cnonce = args.get("cnonce")
    if role != proto.ROLE_PATIENT and role != proto.ROLE_CLINICIAN:
        raise proto.CommandError(proto.BAD_ARGS, "role must be patient or clinician")
    if not isinstance(mac, str) or len(mac) != 64 or not auth.valid_nonce(mac[:32]) \
            or not auth.valid_nonce(mac[32:]):
        # a malformed MAC is a client bug, not a guess: refused before the throttle and the
        # nonce are touched (a wrong MAC of the right form is what the throttle counts)
        raise proto.CommandError(proto.BAD_ARGS, "mac must be 64 lowercase hex digits")
    if not auth.valid_nonce(cnonce):
        raise proto.CommandError(proto.BAD_ARGS, "cnonce must be 32 lowercase hex digits")
    g = srv.guard
    idle = srv.idle_ms
    if idle is not None and srv.auth_failures and now_ms - g[_G_FAIL] >= idle:
        # no link sensing: a connection ends when it has been quiet for the idle time
        srv.auth_failures = 0
        srv.auth_until_ms = 0
    if now_ms < srv.auth_until_ms:
        raise proto.CommandError(proto.THROTTLED, "too many failures: retry in %d ms"
                                 % (srv.auth_until_ms - now_ms))  # fmt: skip
    wait = auth.global_wait_ms(g[_G_UNTIL], now_ms)
    if wait:
        raise proto.CommandError(proto.THROTTLED, "too many failures on this rig: retry in %d ms"
                                 % wait)  # fmt: skip
    nonce = srv.nonce
    srv.nonce = None  # one attempt per challenge
    if nonce is None:
        raise proto.CommandError(proto.AUTH_FAILED, "no challenge: send hello first")
    key = srv.keys.get(role)
    info = srv.info() if callable(srv.info) else srv.info
    uid = (info or {}).get("uid", "")
    if key is None or not auth.verify(key, nonce, role, uid, cnonce, mac):
        srv.auth_until_ms = now_ms + auth.throttle_ms(srv.auth_failures)
        srv.auth_failures += 1
        g[_G_FAIL] = now_ms
        g[_G_UNTIL] = auth.global_after_fail(g[_G_UNTIL], now_ms)
        end(srv)
        g[_G_UNLOGGED] += 1
        if g[_G_LOGGED] is None or now_ms - g[_G_LOGGED] >= AUDIT_FAIL_MS:
            srv.app.log_event("auth.fail", {"role": role, "failures": g[_G_UNLOGGED],
                                            "reason": "no key" if key is None else "wrong key"},
                              now_ms)  # fmt: skip
            g[_G_LOGGED] = now_ms
            g[_G_UNLOGGED] = 0
        if key is None:
            raise proto.CommandError(proto.AUTH_FAILED, "no %s key provisioned" % role)
        raise proto.CommandError(proto.AUTH_FAILED, "wrong key for %s" % role)
    srv.auth_failures = 0
    srv.auth_until_ms = 0
    srv.role = role
    pad = auth.pads(auth.session_key(key, nonce, cnonce, role, uid))
    srv.sess = [pad[0], pad[1], 0, now_ms]
    ok = g[_G_OK].get(role)
    if ok is not None and now_ms - ok[0] < AUDIT_OK_MS and not g[_G_UNLOGGED]:
        ok[1] += 1  # counted, logged with this role's next auth.ok
        return {"role": role}
    data = {"role": role}
    if ok is not None and ok[1]:
        data["logins"] = ok[1] + 1  # this one and those not logged since the last
    if g[_G_UNLOGGED]:
        data["failures"] = g[_G_UNLOGGED]  # failures not yet in the log
        g[_G_UNLOGGED] = 0
    g[_G_OK][role] = [now_ms, 0]
    srv.app.log_event("auth.ok", data, now_ms)
    return {"role": role}
