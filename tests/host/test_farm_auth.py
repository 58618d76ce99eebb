"""Issue 15: the farm's control relay takes only requests signed with the rig's token
(pumprig.farm_auth), from the client that holds the rig's place (pumprig.farm_holders). A real
virtual rig behind a relay on 127.0.0.1; clients with the token, with none, with a wrong one,
an eavesdropper replaying a captured power cut, and a client with the token whose place
someone else holds. (Who holds the place comes from a fixed view here; from the coordinator in
tests/farm/test_farm.py.)"""

import json
import os
import socket
import stat
import threading

import pytest
from pumprig import farm, farm_auth, keys
from pumprig.farm_export import Relays
from pumprig.farm_holders import FixedPlaces, resource_path
from pumprig.virtual.rig import VirtualRig


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lease(port):
    lease = farm.Lease("pa")
    lease.resources = {"control": {"cls": "NetworkService",
                                   "params": {"address": "127.0.0.1", "port": port}}}
    return lease


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    home = tmp / "exporter"
    home.mkdir(mode=0o700)
    vr = VirtualRig(blank=True, home=str(home), state=str(tmp / "state"))
    vr.start()
    port = _free_port()
    with open(os.path.join(vr.state, "uid")) as f:
        uid = f.read().strip()
    held = FixedPlaces({})
    r = Relays([(port, vr.control, vr.state, uid, "vr1")], "127.0.0.1", held, "hostX",
               home=home).start()
    try:
        yield {"vr": vr, "port": port, "uid": uid, "home": home, "tmp": tmp, "held": held}
    finally:
        r.stop()
        vr.stop()


PATH = resource_path("hostX", "vr1", "control")


@pytest.fixture
def powered(relay):
    """The rig powered at the start and checked after the test through its local socket; its
    place `pa` held by this client."""
    relay["vr"].world.power_on()
    relay["held"].places = {"pa": (farm.identity(), frozenset(), frozenset({PATH}))}
    return lambda: bool(relay["vr"].world.status()["powered"])


def _client_home(relay, name, token=None):
    """A client host's PUMPRIG_HOME with its own key store: the rig's token, another, none."""
    h = relay["tmp"] / name
    if not h.exists():
        h.mkdir(mode=0o700)
        if token is not None:
            keys.KeyStore(h).save_control(relay["uid"], token)
    return h


def test_the_token_is_private_and_in_the_store(relay):
    path = os.path.join(relay["vr"].state, farm_auth.TOKEN_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = open(path).read().strip()
    store = keys.KeyStore(relay["home"])
    assert store.control_token(relay["uid"]) == token
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    # the rig's role keys (written at launch) are still there beside it
    assert store.key(relay["uid"], "clinician")
    # the local control socket is its owner's only
    assert stat.S_IMODE(os.stat(relay["vr"].control).st_mode) & 0o077 == 0
    # a second export reads the same token back (clients keep working)
    assert farm_auth.rig_token(relay["vr"].state, relay["uid"], relay["home"]) == token
    # provisioning new role keys keeps the control token
    keys.KeyStore(relay["home"]).save(relay["uid"], keys.generate())
    assert store.control_token(relay["uid"]) == token


def test_a_client_with_the_shared_store_cuts_the_power(relay, powered, monkeypatch):
    monkeypatch.setenv("LG_USERNAME", "ana")        # labgrid's name for this client
    relay["held"].places = {"pa": (farm.identity(), frozenset(), frozenset({PATH}))}
    monkeypatch.setenv("PUMPRIG_HOME", str(relay["home"]))
    with farm.remote_world(_lease(relay["port"])) as w:
        w.power_cut()
        assert w.status()["powered"] is False
        assert not powered()
        w.power_on()
        assert "pulses_fwd" in w.measure()
    assert powered()


def test_a_client_without_the_token_is_refused(relay, powered, monkeypatch):
    monkeypatch.setenv("PUMPRIG_HOME", str(_client_home(relay, "no-token")))
    with farm.remote_world(_lease(relay["port"])) as w:
        with pytest.raises(farm_auth.ControlRefused, match="no control token for rig %s in "
                           % relay["uid"]):
            w.power_cut()
    assert powered()


def test_an_unsigned_request_is_refused_and_the_connection_closed(relay, powered):
    with socket.create_connection(("127.0.0.1", relay["port"]), timeout=5) as s:
        f = s.makefile("rwb")
        hello = json.loads(f.readline())
        assert hello["auth"] == farm_auth.SCHEME and hello["uid"] == relay["uid"]
        f.write(b'{"op": "power_cut"}\n')
        f.flush()
        reply = json.loads(f.readline())
        assert reply["ok"] is False and reply["refused"] is True
        assert "takes only signed requests" in reply["error"]
        assert f.readline() == b""       # closed
    assert powered()


def test_a_wrong_token_is_refused(relay, powered, monkeypatch):
    monkeypatch.setenv("PUMPRIG_HOME", str(_client_home(relay, "wrong", "ab" * 32)))
    with farm.remote_world(_lease(relay["port"])) as w:
        with pytest.raises(farm_auth.ControlRefused) as e:
            w.power_cut()
    assert str(e.value).startswith("the control service of place pa at 127.0.0.1:%d refused "
                                   "this client: wrong control token for rig %s"
                                   % (relay["port"], relay["uid"]))
    assert isinstance(e.value, farm.FarmError)   # the CLI prints it as `pumprig: ...`
    assert powered()


def test_a_captured_power_cut_cannot_be_replayed(relay, powered):
    """What an eavesdropper saw of a legitimate power cut (its signed line) is refused on the
    same connection (its sequence number is spent) and on a new one (another challenge)."""
    token = keys.KeyStore(relay["home"]).control_token(relay["uid"])
    with socket.create_connection(("127.0.0.1", relay["port"]), timeout=5) as s:
        f = s.makefile("rwb")
        hello = json.loads(f.readline())
        body = json.dumps({"op": "power_cut", "holder": farm.identity()})
        captured = json.dumps({"seq": 1, "body": body,
                               "mac": farm_auth.mac(token, "req", hello["nonce"], 1, body)})
        f.write(captured.encode() + b"\n")
        f.flush()
        assert json.loads(json.loads(f.readline())["body"])["ok"] is True
        assert not powered()
        relay["vr"].world.power_on()
        f.write(captured.encode() + b"\n")            # the same line again
        f.flush()
        reply = json.loads(f.readline())
        assert reply["refused"] is True and "replayed" in reply["error"]
    assert powered()
    with socket.create_connection(("127.0.0.1", relay["port"]), timeout=5) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(captured.encode() + b"\n")            # on another connection
        f.flush()
        reply = json.loads(f.readline())
        assert reply["refused"] is True and "MAC does not match" in reply["error"]
    assert powered()


def test_a_reply_not_signed_with_the_token_is_not_believed(relay, monkeypatch):
    """A service that is not the rig's (it has no token) cannot feed the client measurements."""
    monkeypatch.setenv("PUMPRIG_HOME", str(relay["home"]))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def impostor():
        c, _ = srv.accept()
        with c:
            c.sendall(b'{"auth": "%s", "uid": "%s", "nonce": "00"}\n'
                      % (farm_auth.SCHEME.encode(), relay["uid"].encode()))
            c.recv(4096)
            c.sendall(b'{"seq": 1, "body": "{\\"ok\\": true, \\"result\\": {}}", "mac": "00"}\n')

    t = threading.Thread(target=impostor, daemon=True)
    t.start()
    try:
        with farm.remote_world(_lease(srv.getsockname()[1])) as w:
            with pytest.raises(farm_auth.ControlRefused, match="reply not signed"):
                w.measure()
    finally:
        t.join(5)
        srv.close()


def test_a_client_that_does_not_hold_the_place_is_refused(relay, powered, monkeypatch):
    """The token is not enough: the place is held by someone else (or by no one), so its rig
    is not used; a client the holder allowed (`labgrid-client allow`) is obeyed."""
    monkeypatch.setenv("PUMPRIG_HOME", str(relay["home"]))   # the shared store: the token
    monkeypatch.setenv("LG_HOSTNAME", "hostC")
    monkeypatch.setenv("LG_USERNAME", "ben")
    relay["held"].places = {"pa": ("elsewhere/intruder", frozenset(), frozenset({PATH}))}
    with farm.remote_world(_lease(relay["port"])) as w:
        with pytest.raises(farm_auth.ControlRefused) as e:
            w.power_cut()
    assert str(e.value).startswith(
        "the control service of place pa at 127.0.0.1:%d refused this client: place pa is "
        "held by elsewhere/intruder, not by this client (hostC/ben)" % relay["port"])
    assert powered()
    relay["held"].places = {"pa": (None, frozenset(), frozenset())}      # released
    with farm.remote_world(_lease(relay["port"])) as w:
        with pytest.raises(farm_auth.ControlRefused, match="belongs to no acquired place"):
            w.measure()
    relay["held"].places = {"pa": ("elsewhere/intruder", frozenset({"hostC/ben"}),
                                   frozenset({PATH}))}
    with farm.remote_world(_lease(relay["port"])) as w:
        w.power_cut()
        assert not powered()
        w.power_on()
    assert powered()


def test_a_request_naming_no_holder_is_refused(relay, powered):
    """A signed request without `holder` (a client before the check) is refused."""
    token = keys.KeyStore(relay["home"]).control_token(relay["uid"])
    with socket.create_connection(("127.0.0.1", relay["port"]), timeout=5) as s:
        f = s.makefile("rwb")
        hello = json.loads(f.readline())
        body = json.dumps({"op": "power_cut"})
        f.write(json.dumps({"seq": 1, "body": body, "mac": farm_auth.mac(
            token, "req", hello["nonce"], 1, body)}).encode() + b"\n")
        f.flush()
        reply = json.loads(f.readline())
        assert reply["refused"] is True and "names no holder" in reply["error"]
        assert f.readline() == b""       # closed
    assert powered()
