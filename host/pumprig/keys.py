"""The host key store: $PUMPRIG_HOME/keys.json (or the file `keys` names in
$PUMPRIG_HOME/config.toml) maps a board uid to its role keys.

    {"e6614103e7452d2f": {"patient": "<64 hex>", "clinician": "<64 hex>"}}

A virtual rig exported to a farm also has "control": the token its control relay checks
(pumprig.farm_auth).

The file is written 0600 and atomically; keys are never printed or put in error messages.
"""

import json
import os
import secrets
from pathlib import Path

from pumprig.errors import AuthError

ROLES = ("patient", "clinician")
CONTROL = "control"  # a rig's farm control token (pumprig.farm_auth), not a protocol role
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


def store_path(home):
    """Where the key store is: `keys = "PATH"` in $PUMPRIG_HOME/config.toml (one store that
    every host of a farm shares, docs/farm.md), else $PUMPRIG_HOME/keys.json."""
    import tomllib

    cfg = Path(home) / "config.toml"
    try:
        conf = tomllib.loads(cfg.read_text("utf-8"))
    except FileNotFoundError:
        return Path(home) / "keys.json"
    except (OSError, ValueError) as e:
        raise AuthError("cannot read %s: %s" % (cfg, e)) from None
    keys = conf.get("keys")
    if keys is None:
        return Path(home) / "keys.json"
    if not isinstance(keys, str) or not keys:
        raise AuthError("%s: keys must be the path of the key store file" % cfg)
    return Path(home) / os.path.expanduser(keys)  # relative to PUMPRIG_HOME


class KeyStore:
    def __init__(self, home=None):
        self.home = pumprig_home(home)
        self.path = store_path(self.home)

    def load(self):
        """All entries ({} when there is no store yet). Keys are never world-readable: a
        store of ours that is gets closed to other users, someone else's is refused."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_mode & 0o007 and st.st_uid == os.getuid():
                    os.fchmod(f.fileno(), st.st_mode & 0o770)  # ours: closed to other users
                    st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise AuthError("cannot read the key store %s: %s (it is left as it is)"
                            % (self.path, e.strerror)) from None
        if st.st_mode & 0o007:
            raise AuthError("the key store %s is open to every user: its owner must run "
                            "`chmod o-rwx %s` (and re-provision: its keys are disclosed)"
                            % (self.path, self.path))
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

    def control_token(self, uid):
        """The control token of a rig's farm services (pumprig.farm_auth), or None."""
        entry = self.get(uid)
        k = entry.get(CONTROL) if entry else None
        return k if _valid_key(k) else None

    def save(self, uid, keys):
        """Store (replace) the role keys of one board; its control token is kept. The file
        stays 0600."""
        for role, k in keys.items():
            if role not in ROLES or not _valid_key(k):
                raise AuthError("refusing to store an invalid %s key" % role)

        def replace(entry):
            new = dict(keys)
            if _valid_key(entry.get(CONTROL)):
                new[CONTROL] = entry[CONTROL]
            return new

        return self._update(uid, replace)

    def save_control(self, uid, token):
        """Store the control token of one rig (its role keys kept)."""
        if not _valid_key(token):
            raise AuthError("refusing to store an invalid control token")
        return self._update(uid, lambda entry: dict(entry, **{CONTROL: token}))

    def _update(self, uid, change):
        """data[uid] = change(data[uid] or {}), read-modify-write under the store's lock."""
        import fcntl

        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # hosts sharing one store write one at a time (read-modify-write under the lock)
        lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT,
                       0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.load()
            entry = data.get(uid)
            data[uid] = change(entry if isinstance(entry, dict) else {})
            tmp = self.path.with_name(self.path.name + ".tmp%d" % os.getpid())
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
        finally:
            os.close(lock)
        return self.path
