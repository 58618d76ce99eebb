"""Authentication of a farm's control service (a virtual rig's control relay, docs/farm.md).

Each exported rig has a random token: `control.key` (0600) in the rig's state folder, and the
`control` field of the rig's entry in the key store, which the farm's hosts share (pumprig.keys),
so any client host with the store can use the service and no other can. On every connection:

    server -> {"auth": "pumprig-hmac-sha256", "uid": UID, "nonce": HEX}     the challenge
    client -> {"seq": N, "body": "<request JSON>", "mac": HEX}              N = 1, 2, 3 ...
    server -> {"seq": N, "body": "<reply JSON>", "mac": HEX}

    mac = HMAC-SHA256(token, "pumprig-control|" + DIR + "|" + nonce + "|" + N + "|" + body)

with DIR "req" or "rep". The nonce is new for each connection and the server takes each N once
and in order, so a request captured on one connection is refused on any other and on its own.
Replies are signed too: the client knows they come from the holder of the token. A refused
request is answered {"ok": false, "refused": true, "error": ...} (unsigned) and the connection
closed. Nothing is encrypted: measurements travel in clear.
"""

import hashlib
import hmac
import json
import os
import secrets

from pumprig.errors import FarmError

SCHEME = "pumprig-hmac-sha256"
TOKEN_FILE = "control.key"
TOKEN_BYTES = 32


class ControlRefused(FarmError):
    """A control service refused this client (no token, a wrong token, a replayed request),
    or its reply was not signed with the rig's token."""


def mac(token, direction, nonce, seq, body):
    msg = "pumprig-control|%s|%s|%d|%s" % (direction, nonce, seq, body)
    return hmac.new(bytes.fromhex(token), msg.encode("utf-8"), hashlib.sha256).hexdigest()


def rig_token(state, uid, home=None):
    """The rig's token: read from STATE/control.key, or made and written there (0600) at the
    first export; in both cases put in the key store when the store lacks it."""
    from pumprig.keys import KeyStore

    path = os.path.join(state, TOKEN_FILE)
    try:
        with open(path) as f:
            token = f.read().strip()
        os.chmod(path, 0o600)
    except FileNotFoundError:
        token = secrets.token_hex(TOKEN_BYTES)
        tmp = path + ".tmp%d" % os.getpid()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    if len(token) != 2 * TOKEN_BYTES or not all(c in "0123456789abcdef" for c in token):
        raise FarmError("%s is not a control token: delete it and export again" % path)
    store = KeyStore(home)
    if store.control_token(uid) != token:
        store.save_control(uid, token)
    return token


def _line(obj):
    return (json.dumps(obj, sort_keys=True) + "\n").encode()


def refusal(message):
    return _line({"ok": False, "refused": True, "error": message})


class Guard:
    """The server's side of one connection: its challenge, the next sequence number."""

    def __init__(self, token, uid):
        self.token = token
        self.uid = uid
        self.nonce = secrets.token_hex(16)
        self.seq = 0

    def hello(self):
        return _line({"auth": SCHEME, "uid": self.uid, "nonce": self.nonce})

    def check(self, line):
        """The request text of a signed line; ControlRefused for anything else."""
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if not (isinstance(msg, dict) and isinstance(msg.get("body"), str)
                and isinstance(msg.get("mac"), str) and type(msg.get("seq")) is int):
            raise ControlRefused(
                "the control service of rig %s takes only signed requests (this one is not): "
                "use pumprig (pumprig.farm.remote_world) on a host that shares the farm's key "
                "store (docs/farm.md)" % self.uid)
        want = mac(self.token, "req", self.nonce, msg["seq"], msg["body"])
        if not hmac.compare_digest(want.encode(), msg["mac"].encode("utf-8", "replace")):
            raise ControlRefused(
                "wrong control token for rig %s: the request's MAC does not match this "
                "connection's challenge (this host's key store is not the farm's shared one, "
                "the token was renewed, or the request was replayed from another connection; "
                "docs/farm.md)" % self.uid)
        if msg["seq"] != self.seq + 1:
            raise ControlRefused(
                "request %d refused, %d expected: a replayed or reordered request"
                % (msg["seq"], self.seq + 1))
        self.seq = msg["seq"]
        return msg["body"]

    def seal(self, body):
        """The signed reply line to the last request checked (body: the reply's JSON text)."""
        return _line({"seq": self.seq, "body": body,
                      "mac": mac(self.token, "rep", self.nonce, self.seq, body)})


class Session:
    """The client's side of one connection, made from the server's challenge."""

    def __init__(self, hello_line, where, home=None):
        from pumprig.keys import KeyStore

        try:
            hello = json.loads(hello_line)
        except ValueError:
            hello = None
        if not (isinstance(hello, dict) and hello.get("auth") == SCHEME
                and isinstance(hello.get("nonce"), str) and isinstance(hello.get("uid"), str)):
            raise ControlRefused("%s did not send a pumprig challenge: it is not a control "
                                 "service of this pumprig version" % where)
        self.uid = hello["uid"]
        self.nonce = hello["nonce"]
        self.where = where
        store = KeyStore(home)
        self.token = store.control_token(self.uid)
        if self.token is None:
            raise ControlRefused(
                "no control token for rig %s in %s: the exporter host writes it there when "
                "`pumprig farm export --relay` starts; this host's config.toml `keys` must name "
                "the farm's shared key store (docs/farm.md, step 3)" % (self.uid, store.path))
        self.seq = 0

    def wrap(self, req):
        """The signed line of a request (a dict)."""
        self.seq += 1
        body = json.dumps(req)
        return _line({"seq": self.seq, "body": body,
                      "mac": mac(self.token, "req", self.nonce, self.seq, body)})

    def unwrap(self, line):
        """The reply (a dict) of the last request; ControlRefused for a refusal or a reply
        not signed with the token."""
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if isinstance(msg, dict) and msg.get("refused"):
            raise ControlRefused("%s refused this client: %s" % (self.where, msg.get("error")))
        if not (isinstance(msg, dict) and isinstance(msg.get("body"), str)
                and isinstance(msg.get("mac"), str) and msg.get("seq") == self.seq
                and hmac.compare_digest(
                    mac(self.token, "rep", self.nonce, self.seq, msg["body"]).encode(),
                    msg["mac"].encode("utf-8", "replace"))):
            raise ControlRefused("%s sent a reply not signed with rig %s's token"
                                 % (self.where, self.uid))
        return json.loads(msg["body"])
