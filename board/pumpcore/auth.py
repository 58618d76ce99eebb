"""Roles by HMAC challenge: HMAC-SHA256 on hashlib alone (MicroPython has no hmac module).

hello hands out a nonce (16 random bytes as 32 lowercase hex digits); the client answers
auth {role, mac} with mac = hex(HMAC-SHA256(key[role], nonce + ":" + role + ":" + uid)).
Keys are bytes (from hex in data/keys.json); they are never logged, echoed or put in errors.

The firmware imports it only through pumpcore.session (at boot for the keys, then for a
login): it is not resident (see App._shed). The host imports it for mac_hex.
"""

from binascii import hexlify, unhexlify
from hashlib import sha256

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_BLOCK = const(64)
NONCE_BYTES = const(16)
THROTTLE_FIRST_MS = const(1000)
THROTTLE_MAX_MS = const(60000)


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


def challenge(nonce, role, uid):
    """The bytes that get MACed."""
    return ("%s:%s:%s" % (nonce, role, uid)).encode()


def mac_hex(key, nonce, role, uid):
    """What a client sends as `mac` (64 lowercase hex digits)."""
    return hexlify(hmac_sha256(key_bytes(key), challenge(nonce, role, uid))).decode()


def verify(key, nonce, role, uid, mac):
    """True when mac (hex text) is the right answer; compared in constant time."""
    if not isinstance(mac, str):
        return False
    return equal(mac_hex(key, nonce, role, uid), mac.lower())


def throttle_ms(failures):
    """How long the next attempt must wait after a failed one, given the failures in a row
    before it: 1 s doubling up to 60 s (a success resets the count)."""
    delay = THROTTLE_FIRST_MS
    for _ in range(failures):
        delay *= 2
        if delay >= THROTTLE_MAX_MS:
            return THROTTLE_MAX_MS
    return delay
