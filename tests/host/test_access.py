"""Access: brute force on the keys is throttled, and no key shows anywhere it should not.

- The throttle: `hello` + `auth` with random MACs against the firmware's server for 10 minutes
  of board time gets 15 MACs checked on one connection (1 s doubling to 60 s between
  failures): 1.5 a minute; opening a new connection for every attempt leaves the rig-wide
  ceiling: 10 at once, then one every 6 s (109 in 10 minutes).
  A right MAC sent inside the delay is refused unread; after the delay it is accepted.
- The repository: no tracked file holds a 64-hex-digit secret except the documented test
  vectors of docs/protocol.md (the key bytes 0..31 and MACs made with it).
- A provisioned virtual rig: its two keys appear in no file of the working tree, and in nothing
  the firmware says: hello, status, alarms, the event log (as read through `log` and as the raw
  data/events.log), error messages of failed logins, and the host client's errors.
"""

import json
import os
import re
import secrets
import subprocess
import sys

import pytest
from pumpcore import auth, proto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tests", "board"))
import campaign  # noqa: E402
from _util import take_output  # noqa: E402
from fakeboard import FakeBoard  # noqa: E402
from pumpcore.app import App  # noqa: E402

HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
DOC_KEY = bytes(range(32)).hex()


def test_brute_force_is_throttled_to_a_trickle():
    fig = campaign.auth_attack(minutes=10, step_ms=100)
    # attempts at 0, 1, 3, 7, 15, 31, 63 s, then every 60 s: 15 in 600 s
    assert fig["macs_checked"] == 15 and fig["per_minute"] == 1.5
    assert fig["throttled"] == fig["requests"] - 15


def test_brute_force_across_connections_meets_the_ceiling():
    """Finding 4: the back-off is per connection; the rig-wide ceiling bounds an attacker who
    opens a new connection for every guess."""
    fig = campaign.auth_attack(minutes=10, step_ms=100, reconnect=True)
    assert fig["macs_checked"] == 10 + (600_000 - 100) // 6000


def _frames(srv):
    return [proto.decode(x + b"\n") for x in take_output(srv).split(b"\n") if x]


def test_a_right_mac_inside_the_delay_is_not_even_read(tmp_path):
    key = secrets.token_hex(32)
    app = App(FakeBoard(root=str(tmp_path) + "/"), keys={"clinician": key})
    srv = app.server
    uid = app.board.uid

    def attempt(i, now, good):
        srv.feed(proto.encode_request("h%d" % i, "hello", {}), now)
        nonce = [f for f in _frames(srv) if f.id == "h%d" % i][0].body["nonce"]
        cn = "5a" * 16
        mac = auth.mac_hex(bytes.fromhex(key), nonce, "clinician", uid, cn) if good else "0" * 64
        srv.feed(proto.encode_request("a%d" % i, "auth", {"role": "clinician", "mac": mac,
                                                          "cnonce": cn}), now)
        f = [f for f in _frames(srv) if f.id == "a%d" % i][0]
        return f.body.get("code") if f.name == "err" else "ok"

    assert attempt(1, 0, False) == proto.AUTH_FAILED
    assert attempt(2, 500, True) == proto.THROTTLED
    assert attempt(3, 1000, False) == proto.AUTH_FAILED  # now 2 s
    assert attempt(4, 2999, True) == proto.THROTTLED
    assert attempt(5, 3000, True) == "ok"
    assert srv.role == "clinician"


ALLOWED = {DOC_KEY,
           # MACs of the documented examples, made with the documentation key
           "347d9b719f3c61947da0410144793b52cc4bb45388d21b5c6eedab35fdfcfa61",
           "582aa3125591da9070010fb7c7de826e25b1c6a287ffb55c3652b4d7248356df",
           "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
           "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"}


def _tracked():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def test_no_secret_in_the_tracked_files():
    hexrun = re.compile(rb"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
    found = {}
    for p in _tracked():
        try:
            data = open(os.path.join(ROOT, p), "rb").read()
        except OSError:
            continue
        for m in hexrun.findall(data):
            if m.decode().lower() not in ALLOWED:
                found.setdefault(p, []).append(m.decode())
    assert not found, found
    assert not [p for p in _tracked() if os.path.basename(p) == "keys.json"]


def _walk_tree():
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in (".venv", ".git", "__pycache__", ".mypy_cache",
                                                ".ruff_cache", ".pytest_cache", "node_modules")]
        for f in files:
            yield os.path.join(d, f)


@pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
def test_a_provisioned_rig_never_shows_its_keys(tmp_path, monkeypatch):
    pytest.importorskip("serial")
    from pumprig.client import Client
    from pumprig.errors import AuthError
    from pumprig.virtual.link import connect as _vconnect
    from pumprig.virtual.rig import open_rig

    home = str(tmp_path / "home")
    monkeypatch.setenv("PUMPRIG_HOME", home)
    with open_rig(warp=True) as rig:
        keys = json.load(open(os.path.join(rig.fs, "data", "keys.json")))
        secrets_ = [keys["patient"].lower(), keys["clinician"].lower()]
        said = []
        c = _vconnect(rig.link, home=home)
        said.append(json.dumps(c.info))
        c.refill(20_000_000)
        c.plan_set(campaign.PLAN)
        rig.world.advance(by_ms=3 * 3_600_000)
        c.bolus()
        said += [json.dumps(c.status()), json.dumps(c.alarms()), json.dumps(c.log_all()),
                 json.dumps(c.calib_get())]
        c.close()
        # failed logins: a wrong key for each role, through the client and raw
        bad = {rig.world.status()["uid"]: {"patient": "ab" * 32, "clinician": "cd" * 32}}
        badhome = tmp_path / "bad"
        badhome.mkdir()
        (badhome / "keys.json").write_text(json.dumps(bad))
        for role in ("patient", "clinician"):
            with pytest.raises(AuthError) as ei:
                Client(rig.link, role=role, home=str(badhome)).open()
            said.append(str(ei.value))
        c = Client(rig.link, role=None, home=home)
        c.open()
        for mac in ("00" * 32, secrets_[0], "x"):
            c.request("hello")
            try:
                c.request("auth", {"role": "clinician", "mac": mac}, retries=0)
            except Exception as e:  # noqa: BLE001 (the refusal is what we read)
                said.append(str(e))
        c.close()
        said.append(open(os.path.join(rig.fs, "data", "events.log")).read())
        text = "\n".join(said).lower()
        assert "wrong key" in text  # the failures were seen
        for k in secrets_:
            assert k not in text  # not echoed, even the one sent as a MAC
        # and nothing in the working tree holds them (the rig and the key store live in tmp)
        for p in _walk_tree():
            try:
                data = open(p, "rb").read().lower()
            except OSError:
                continue
            for k in secrets_:
                assert k.encode() not in data, p
