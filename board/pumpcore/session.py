"""The login path of the Server: the `hello` and `auth` commands (docs/protocol.md).

A login happens once a session, so this code (and pumpcore.auth, which it imports) is not
resident: Server._dispatch imports it for the call, and on MicroPython App._shed drops it after
the step (see pumpcore.app.drop_transient). Everything it leaves behind is plain data on the
Server: the keys (srv._keys, from key_table at boot), the nonce (srv._nonce), the role
(srv.role), the session key's pads (srv.skey) and the throttle: this connection's failures in a
row (srv.auth_failures) and the board time before which its next attempt is refused
(srv.auth_until_ms), the last failure (srv.auth_fail_ms), and the rig-wide ceiling's drain time
(srv.glob_until_ms). login returns what the App writes to its event log (audit).
Nothing may keep a reference to this module or to its functions.
"""

from pumpcore import auth, proto

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


AUDIT_FAIL_MS = const(60000)  # at most one auth.fail event a minute (the others are counted)


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
    info = srv._info() if callable(srv._info) else srv._info
    res = dict(info) if info else {}
    srv.end_session()
    srv._nonce = auth.new_nonce(srv._rand)
    res["protocol"] = proto.PROTOCOL_VERSION
    res["nonce"] = srv._nonce
    res["plan_crc"] = srv.app.plan_crc()
    limits = dict(res.get("limits") or {})
    limits["max_line"] = proto.MAX_LINE
    limits["max_id"] = proto.MAX_ID
    res["limits"] = limits
    return res


def login(srv, args, now_ms):
    """auth {role, mac, cnonce}: one attempt per nonce; a per-connection back-off under a
    rig-wide ceiling. Leaves the event for the audit log in srv.audit ((kind, data) or None)."""
    role = args.get("role")
    mac = args.get("mac")
    cnonce = args.get("cnonce")
    if role != proto.ROLE_PATIENT and role != proto.ROLE_CLINICIAN:
        raise proto.CommandError(proto.BAD_ARGS, "role must be patient or clinician")
    if not isinstance(mac, str):
        raise proto.CommandError(proto.BAD_ARGS, "mac must be hex text")
    if not auth.valid_nonce(cnonce):
        raise proto.CommandError(proto.BAD_ARGS, "cnonce must be 32 lowercase hex digits")
    idle = srv.idle_ms
    if idle is not None and srv.auth_failures and now_ms - srv.auth_fail_ms >= idle:
        # no link sensing: a connection ends when it has been quiet for the idle time
        srv.auth_failures = 0
        srv.auth_until_ms = 0
    if now_ms < srv.auth_until_ms:
        raise proto.CommandError(proto.THROTTLED, "too many failures: retry in %d ms"
                                 % (srv.auth_until_ms - now_ms))  # fmt: skip
    wait = auth.global_wait_ms(srv.glob_until_ms, now_ms)
    if wait:
        raise proto.CommandError(proto.THROTTLED, "too many failures on this rig: retry in %d ms"
                                 % wait)  # fmt: skip
    nonce = srv._nonce
    srv._nonce = None  # one attempt per challenge
    if nonce is None:
        raise proto.CommandError(proto.AUTH_FAILED, "no challenge: send hello first")
    key = srv._keys.get(role)
    info = srv._info() if callable(srv._info) else srv._info
    uid = (info or {}).get("uid", "")
    if key is None or not auth.verify(key, nonce, role, uid, cnonce, mac):
        srv.auth_until_ms = now_ms + auth.throttle_ms(srv.auth_failures)
        srv.auth_failures += 1
        srv.auth_fail_ms = now_ms
        srv.glob_until_ms = auth.global_after_fail(srv.glob_until_ms, now_ms)
        srv.end_session()
        reason = "no key" if key is None else "wrong key"
        srv.fails_unlogged += 1
        if srv.fail_logged_ms is None or now_ms - srv.fail_logged_ms >= AUDIT_FAIL_MS:
            ev = ("auth.fail", {"role": role, "reason": reason, "failures": srv.fails_unlogged})
            srv.fail_logged_ms = now_ms
            srv.fails_unlogged = 0
        else:
            ev = None
        srv.audit = ev
        if key is None:
            raise proto.CommandError(proto.AUTH_FAILED, "no %s key provisioned" % role)
        raise proto.CommandError(proto.AUTH_FAILED, "wrong key for %s" % role)
    srv.auth_failures = 0
    srv.auth_until_ms = 0
    srv.role = role
    srv.skey = auth.pads(auth.session_key(key, nonce, cnonce, role, uid))
    srv.rseq = 0
    srv.seen_ms = now_ms
    data = {"role": role}
    if srv.fails_unlogged:
        data["failures"] = srv.fails_unlogged  # failures not yet in the log
        srv.fails_unlogged = 0
    srv.audit = ("auth.ok", data)
    return {"role": role}
