"""The login path of the Server: the `hello` and `auth` commands (docs/protocol.md).

A login happens once a session, so this code (and pumpcore.auth, which it imports) is not
resident: Server._dispatch imports it for the call, and on MicroPython App._shed drops it after
the step (see pumpcore.app.drop_transient). Everything it leaves behind is plain data on the
Server: the keys (srv._keys, from key_table at boot), the nonce (srv._nonce), the role
(srv.role) and the throttle (srv.auth_failures, failed attempts in a row; srv.auth_until_ms,
board time before which an attempt is refused).
Nothing may keep a reference to this module or to its functions.
"""

from pumpcore import auth, proto


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
    srv.role = proto.ROLE_NONE
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
    """auth {role, mac}: one attempt per nonce, throttled after failures on board time."""
    role = args.get("role")
    mac = args.get("mac")
    if role != proto.ROLE_PATIENT and role != proto.ROLE_CLINICIAN:
        raise proto.CommandError(proto.BAD_ARGS, "role must be patient or clinician")
    if not isinstance(mac, str):
        raise proto.CommandError(proto.BAD_ARGS, "mac must be hex text")
    if now_ms < srv.auth_until_ms:
        raise proto.CommandError(proto.THROTTLED, "too many failures: retry in %d ms"
                                 % (srv.auth_until_ms - now_ms))  # fmt: skip
    nonce = srv._nonce
    srv._nonce = None  # one attempt per challenge
    if nonce is None:
        raise proto.CommandError(proto.AUTH_FAILED, "no challenge: send hello first")
    key = srv._keys.get(role)
    info = srv._info() if callable(srv._info) else srv._info
    uid = (info or {}).get("uid", "")
    if key is None or not auth.verify(key, nonce, role, uid, mac):
        srv.auth_until_ms = now_ms + auth.throttle_ms(srv.auth_failures)
        srv.auth_failures += 1
        srv.role = proto.ROLE_NONE
        if key is None:
            raise proto.CommandError(proto.AUTH_FAILED, "no %s key provisioned" % role)
        raise proto.CommandError(proto.AUTH_FAILED, "wrong key for %s" % role)
    srv.auth_failures = 0
    srv.auth_until_ms = 0
    srv.role = role
    return {"role": role}
