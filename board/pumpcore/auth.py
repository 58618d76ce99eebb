"""Roles by HMAC challenge: HMAC-SHA256 on hashlib alone (MicroPython has no hmac module).

hello hands out a nonce (16 random bytes as 32 lowercase hex digits); the client picks its own
cnonce (the same form) and answers auth {role, mac, cnonce} with
mac = hex(HMAC-SHA256(key[role], nonce + ":" + role + ":" + uid + ":" + cnonce)).
Both sides then hold the session key
K = HMAC-SHA256(key[role], "session:" + nonce + ":" + cnonce + ":" + role + ":" + uid), and
every later request is signed with it (sign_request; the firmware checks it in
pumpcore.server, docs/protocol.md has the exact bytes).
Keys are bytes (from hex in data/keys.json); they are never logged, echoed or put in errors.

The firmware imports it only through pumpcore.session (at boot for the keys, then for a
login): it is not resident (see App._shed). The host imports it for mac_hex.
"""

from binascii import hexlify, unhexlify
from hashlib import sha256

from pumpcore import const

_BLOCK = const(64)
NONCE_BYTES = const(16)
THROTTLE_FIRST_MS = const(1000)
THROTTLE_MAX_MS = const(60000)
# The rig-wide ceiling over every connection: a leaky bucket of GLOBAL_FAILS failures that
# drains one failure every GLOBAL_STEP_MS (GLOBAL_FAILS a minute sustained, empty a minute
# after the last failure).
GLOBAL_FAILS = const(10)
GLOBAL_STEP_MS = const(6000)


class AuthKeyError(ValueError):
    """A key that is not hex, or is too short."""


def key_bytes(key):
    """A key given as bytes or hex text, as bytes (at least 16 bytes)."""
    if isinstance(key, str):
        try:
            key = unhexlify(key)
        except ValueError:
            raise AuthKeyError("key is not hex") from None
    if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
        raise AuthKeyError("key must be at least 16 bytes")
    return bytes(key)


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of bytes msg under bytes key; 32 bytes."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    ipad = bytes([b ^ 0x36 for b in key])
    opad = bytes([b ^ 0x5C for b in key])
    h = sha256(ipad)
    h.update(msg)
    inner = h.digest()
    h = sha256(opad)
    h.update(inner)
    return h.digest()


def equal(a, b):
    """Constant-time comparison of two bytes or two str (time depends on length only)."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    diff = len(a) ^ len(b)
    n = len(a) if len(a) < len(b) else len(b)
    for i in range(n):
        diff |= a[i] ^ b[i]
    return diff == 0


def new_nonce(rand):
    """A fresh challenge: rand(n) -> n random bytes (os.urandom on the boards)."""
    return hexlify(rand(NONCE_BYTES)).decode()


def challenge(nonce, role, uid, cnonce):
    """The bytes that get MACed."""
    return ("%s:%s:%s:%s" % (nonce, role, uid, cnonce)).encode()


def mac_hex(key, nonce, role, uid, cnonce):
    """What a client sends as `mac` (64 lowercase hex digits)."""
    return hexlify(hmac_sha256(key_bytes(key), challenge(nonce, role, uid, cnonce))).decode()


def verify(key, nonce, role, uid, cnonce, mac):
    """True when mac (hex text) is the right answer; compared in constant time."""
    if not isinstance(mac, str):
        return False
    return equal(mac_hex(key, nonce, role, uid, cnonce), mac.lower())


def valid_nonce(s):
    """True for 32 lowercase hex digits (a nonce or a cnonce)."""
    if not isinstance(s, str) or len(s) != 2 * NONCE_BYTES:
        return False
    for ch in s:
        o = ord(ch)
        if not (48 <= o <= 57 or 97 <= o <= 102):
            return False
    return True


def session_key(key, nonce, cnonce, role, uid):
    """The session key both ends derive from a successful login (32 bytes)."""
    msg = ("session:%s:%s:%s:%s" % (nonce, cnonce, role, uid)).encode()
    return hmac_sha256(key_bytes(key), msg)


def pads(skey):
    """(key ^ ipad, key ^ opad), 64 bytes each: what the per-request HMAC starts from, kept
    for the session so a request costs two SHA-256 runs and no key schedule."""
    k = skey + bytes(_BLOCK - len(skey))
    return bytes([b ^ 0x36 for b in k]), bytes([b ^ 0x5C for b in k])


def request_mac(pad, data):
    """The MAC of a signed request: the first 16 bytes of HMAC-SHA256(K, data) as 32
    lowercase hex digits (bytes), pad = pads(K)."""
    h = sha256(pad[0])
    h.update(data)
    inner = h.digest()
    h = sha256(pad[1])
    h.update(inner)
    return hexlify(h.digest()[:16])


def sign_request(pad, req_id, cmd, args, seq):
    """A signed request line: @<id> <cmd> <json>|<seq>|<mac>*<crc>\n (pad = pads(K))."""
    from binascii import crc32

    from pumpcore import proto

    line = proto.encode_request(req_id, cmd, args)
    data = line[:-10] + b"|%d|" % seq
    if len(data) + proto.MAC_HEX + 10 > proto.MAX_LINE:
        raise proto.CommandError(proto.TOO_LONG, "signed frame exceeds %d bytes" % proto.MAX_LINE)
    data += request_mac(pad, data)
    return data + b"*%08x\n" % (crc32(data) & 0xFFFFFFFF)


def global_wait_ms(until_ms, now_ms):
    """How long an attempt must wait for the rig-wide ceiling (0: it may go ahead), given the
    bucket's drain time until_ms."""
    over = until_ms - now_ms - (GLOBAL_FAILS - 1) * GLOBAL_STEP_MS
    return over if over > 0 else 0


def global_after_fail(until_ms, now_ms):
    """The bucket's drain time after one more failure."""
    return (until_ms if until_ms > now_ms else now_ms) + GLOBAL_STEP_MS


def throttle_ms(failures):
    """How long the next attempt must wait after a failed one, given the failures in a row
    before it: 1 s doubling up to 60 s (a success resets the count)."""
    delay = THROTTLE_FIRST_MS
    for _ in range(failures):
        delay *= 2
        if delay >= THROTTLE_MAX_MS:
            return THROTTLE_MAX_MS
    return delay
