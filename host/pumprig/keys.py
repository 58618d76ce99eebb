"""The host key store: $PUMPRIG_HOME/keys.json maps a board uid to its role keys.

    {"e6614103e7452d2f": {"patient": "<64 hex>", "clinician": "<64 hex>"}}

The file is written 0600 and atomically; keys are never printed or put in error messages.
"""

import json
import os
import secrets
from pathlib import Path

from pumprig.errors import AuthError

ROLES = ("patient", "clinician")
KEY_BYTES = 32


def pumprig_home(home=None):
    """$PUMPRIG_HOME, else ~/.local/share/pumprig (home overrides both)."""
    if home is not None:
        return Path(home)
    env = os.environ.get("PUMPRIG_HOME")
    if env:
        return Path(env)
    return Path.home() / ".local" / "share" / "pumprig"


def generate():
    """Fresh random keys for both roles, as hex."""
    return {role: secrets.token_hex(KEY_BYTES) for role in ROLES}


def _valid_key(k):
    if not isinstance(k, str) or len(k) < 32 or len(k) % 2:
        return False
    try:
        bytes.fromhex(k)
    except ValueError:
        return False
    return True


class KeyStore:
    def __init__(self, home=None):
        self.home = pumprig_home(home)
        self.path = self.home / "keys.json"

    def load(self):
        """All entries ({} when there is no store yet)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise AuthError("cannot read the key store %s: %s (it is left as it is)"
                            % (self.path, e.strerror)) from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):    # UnicodeDecodeError is a ValueError
            raise AuthError("the key store %s is not valid JSON (it is left as it is: repair "
                            "or move it)" % self.path) from None
        if not isinstance(data, dict):
            raise AuthError("the key store %s is not a JSON object" % self.path)
        return data

    def get(self, uid):
        """{role: hex} for a board, or None."""
        entry = self.load().get(uid)
        return entry if isinstance(entry, dict) else None

    def key(self, uid, role):
        """The hex key for this board and role; AuthError naming what to do when missing."""
        entry = self.get(uid)
        if entry is None:
            raise AuthError(
                "no keys for rig %s in %s: run `pumprig provision` (or pass the keys)"
                % (uid, self.path)
            )
        k = entry.get(role)
        if not _valid_key(k):
            raise AuthError("no valid %s key for rig %s in %s" % (role, uid, self.path))
        return k

    def save(self, uid, keys):
        """Store (replace) the keys of one board; the file stays 0600."""
        for role, k in keys.items():
            if role not in ROLES or not _valid_key(k):
                raise AuthError("refusing to store an invalid %s key" % role)
        data = self.load()
        data[uid] = dict(keys)
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("keys.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return self.path
