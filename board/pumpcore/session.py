"""The login path of the Server: the `hello` and `auth` commands (docs/protocol.md).

A login happens once a session: per call (pumpcore.loader; the rule: docs/architecture.md,
"Memory"). hello and login read the Server's public fields and return values; the Server
assigns its own login state from them: the throttle (this connection's failures in a row, the
board time before which its next attempt is refused), the challenge (nonce), the role, the
session (the session key's pads, the last sequence number, the last signed request's time),
the requests remembered for retries and the guard (the rig-wide ceiling's drain time, the last
failure, the last auth.fail logged, the failures not logged, per role the last auth.ok logged
and the logins since). The keys are key_table's, at boot. Logins go to the App's event log
(audit). Nothing may keep a reference to this module or to its functions.
"""

from pumpcore import auth, const, proto

AUDIT_FAIL_MS = const(60000)  # at most one auth.fail event a minute (the others are counted)
# at most one auth.ok event per role in 10 min (the others are counted in the next one): a
# monitor logging in at every poll would push every other event out of the 200-event log
AUDIT_OK_MS = const(600000)
# the guard (Server.guard)
_G_UNTIL = const(0)  # the rig-wide ceiling's drain time (pumpcore.auth.global_wait_ms)
_G_FAIL = const(1)  # board time of the last failure
_G_LOGGED = const(2)  # board time of the last auth.fail logged, or None
_G_UNLOGGED = const(3)  # failures since then, not logged
_G_OK = const(4)  # per role: [board time of its last auth.ok logged, logins since, not logged]


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
    """A new session: the role and the session end (the back-off stays), a fresh challenge.
    Returns the Server's login state after it and the board's info for the client, as login
    does: (auth_failures, auth_until_ms, nonce, role, sess, cache, guard, info)."""
    info = srv.info() if callable(srv.info) else srv.info
    res = dict(info) if info else {}
    nonce = auth.new_nonce(srv.rand)
    res["protocol"] = proto.PROTOCOL_VERSION
    res["nonce"] = nonce
    res["plan_crc"] = srv.app.plan_crc()
    limits = dict(res.get("limits") or {})
    limits["max_line"] = proto.MAX_LINE
    limits["max_id"] = proto.MAX_ID
    res["limits"] = limits
    return srv.auth_failures, srv.auth_until_ms, nonce, proto.ROLE_NONE, None, [], srv.guard, res


def login(srv, args, now_ms):
    """auth {role, mac, cnonce}: one attempt per nonce; a per-connection back-off under a
    rig-wide ceiling. Logs auth.ok / auth.fail (never a secret) through srv.app.log_event.
    CommandError (BAD_ARGS) for a malformed request: nothing changes. Otherwise returns the
    Server's login state after the attempt and its answer: (auth_failures, auth_until_ms,
    nonce, role, sess, cache, guard, the result or the CommandError to answer with)."""
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
    fails = srv.auth_failures
    until = srv.auth_until_ms
    g = srv.guard
    idle = srv.idle_ms
    if idle is not None and fails and now_ms - g[_G_FAIL] >= idle:
        # no link sensing: a connection ends when it has been quiet for the idle time
        fails = until = 0
    nonce = srv.nonce
    err = None
    if now_ms < until:
        err = proto.CommandError(proto.THROTTLED, "too many failures: retry in %d ms"
                                 % (until - now_ms))  # fmt: skip
    else:
        wait = auth.global_wait_ms(g[_G_UNTIL], now_ms)
        if wait:
            err = proto.CommandError(proto.THROTTLED, "too many failures on this rig: retry "
                                     "in %d ms" % wait)  # fmt: skip
        elif nonce is None:
            err = proto.CommandError(proto.AUTH_FAILED, "no challenge: send hello first")
    if err is not None:
        # refused before the attempt: the challenge stays, the session too
        return fails, until, nonce, srv.role, srv.sess, srv.cache, g, err
    # one attempt per challenge: the nonce is gone whatever the answer; the guard after the
    # attempt is a new list (the Server assigns it)
    g = [g[0], g[1], g[2], g[3], dict(g[_G_OK])]
    key = srv.keys.get(role)
    info = srv.info() if callable(srv.info) else srv.info
    uid = (info or {}).get("uid", "")
    if key is None or not auth.verify(key, nonce, role, uid, cnonce, mac):
        until = now_ms + auth.throttle_ms(fails)
        fails += 1
        g[_G_FAIL] = now_ms
        g[_G_UNTIL] = auth.global_after_fail(g[_G_UNTIL], now_ms)
        g[_G_UNLOGGED] += 1
        if g[_G_LOGGED] is None or now_ms - g[_G_LOGGED] >= AUDIT_FAIL_MS:
            try:
                srv.app.log_event("auth.fail", {"role": role, "failures": g[_G_UNLOGGED],
                                                "reason": "no key" if key is None
                                                else "wrong key"}, now_ms)  # fmt: skip
                g[_G_LOGGED] = now_ms
                g[_G_UNLOGGED] = 0
            except MemoryError:
                pass  # the audit is best effort (App.log_event): the failure counts all the same
        if key is None:
            err = proto.CommandError(proto.AUTH_FAILED, "no %s key provisioned" % role)
        else:
            err = proto.CommandError(proto.AUTH_FAILED, "wrong key for %s" % role)
        # the session ends: role none, no session, no challenge, no remembered requests
        return fails, until, None, proto.ROLE_NONE, None, [], g, err
    pad = auth.pads(auth.session_key(key, nonce, cnonce, role, uid))
    sess = [pad[0], pad[1], 0, now_ms]
    ok = g[_G_OK].get(role)
    if ok is not None and now_ms - ok[0] < AUDIT_OK_MS and not g[_G_UNLOGGED]:
        g[_G_OK][role] = [ok[0], ok[1] + 1]  # counted, logged with this role's next auth.ok
    else:
        data = {"role": role}
        if ok is not None and ok[1]:
            data["logins"] = ok[1] + 1  # this one and those not logged since the last
        if g[_G_UNLOGGED]:
            data["failures"] = g[_G_UNLOGGED]  # failures not yet in the log
            g[_G_UNLOGGED] = 0
        g[_G_OK][role] = [now_ms, 0]
        srv.app.log_event("auth.ok", data, now_ms)
    return 0, 0, None, role, sess, srv.cache, g, {"role": role}
