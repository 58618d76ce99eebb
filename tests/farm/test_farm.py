"""Issue 15: rigs shared across hosts through labgrid, end to end on this machine.

A coordinator on 127.0.0.1; two "hosts" (hostA, hostB), each with its own PUMPRIG_HOME, a
virtual rig, `pumprig farm export --relay` (exporter configuration + control relay) and its
own labgrid-exporter (which starts its own ser2net on acquire). One key store shared by
configuration. A client host (a third PUMPRIG_HOME) runs a part of the HIL suite on both
places with -n 2, including a remote power cut, and pumprig commands on `lg:PLACE` ports.
Everything started here runs in its own process group, killed at the end.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lab import BENCHES, BIN, PLACES, start_farm, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    f = start_farm(tmp_path_factory.mktemp("farm"))
    try:
        yield f
    finally:
        f.stop()


def _pumprig(farm, *args, timeout=120, **env):
    return subprocess.run([str(BIN / "pumprig")] + list(args), capture_output=True, text=True,
                          env=farm.env(farm.tmp / "client", **env), timeout=timeout)


def _powered(farm, host):
    """The virtual rig of `host`, read through its own control socket on that host."""
    from pumprig.virtual.control import WorldClient

    with WorldClient(str(farm.hosts[host]["home"] / "state" / "control.sock")) as w:
        return bool(w.status()["powered"])


def _holders(farm, places=PLACES):
    from pumprig.farm import parse_places
    from pumprig.farm_command import place_rows

    rows = place_rows(parse_places(farm.lg("-v", "places").stdout))
    return {r["place"]: r["held_by"] for r in rows if r["place"] in places}


def test_exporter_configuration_names_the_rig_its_balance_and_its_control(farm):
    """farm export: the pty behind the link (labgrid wants /dev/...), the balance, the relay."""
    h = farm.hosts["hostA"]
    text = h["yaml"].read_text()
    assert "%s:\n  console:\n    cls: \"RawSerialPort\"\n    port: \"/dev/pts/" % h["rig"] in text
    assert "  balance:\n    cls: \"RawSerialPort\"" in text
    assert "  control:\n    cls: \"NetworkService\"\n    address: \"127.0.0.1\"" in text
    # the benches of hostA's rigs file: their ports and power relays, as labgrid resources
    assert ("bench-c:\n  console:\n    cls: \"RawSerialPort\"\n    port: \"/dev/pts/" in text
            and "  power:\n    cls: \"HttpDigitalOutput\"\n    url: \"%s/coil\"" % farm.relay.url
            in text)
    assert "  power:\n    cls: \"NetworkPowerPort\"\n    model: \"simplerest\"" in text
    # hostB's exporter found the nodelay wrapper first on its PATH; hostA runs ser2net as is
    assert (farm.hosts["hostB"]["home"] / "bin" / "ser2net").exists()
    # the shared key store got both rigs' keys and control tokens from their own hosts, and
    # the token of hostA's bench instrument service; it is private
    store = json.loads(farm.keys.read_text())
    rigs = [e for u, e in store.items() if u != "bench-bench-c"]
    assert len(rigs) == 2 and all(set(e) == {"patient", "clinician", "control"} for e in rigs)
    assert set(store["bench-bench-c"]) == {"control"}
    assert os.stat(farm.keys).st_mode & 0o077 == 0


def test_a_place_held_by_another_client_is_not_used(farm):
    """The place another client holds is refused with a clear message, by the CLI and by the
    HIL plugin; the worker's search for a place takes the free one; the holder keeps it."""
    farm.lg("-p", "place-a", "acquire", user="intruder")
    try:
        r = _pumprig(farm, "--port", "lg:place-a", "status")
        assert r.returncode == 1
        assert r.stderr.startswith("pumprig: place place-a is held by elsewhere/intruder")
        assert "Traceback" not in r.stderr
        from pumprig import farm as lgfarm

        env = farm.env(farm.tmp / "client")
        old = dict(os.environ)
        os.environ.update(LG_COORDINATOR=env["LG_COORDINATOR"])
        try:
            # what the HIL plugin's rig fixture calls for --rig lg:place-a (a usage error)
            sys.path.insert(0, str(REPO / "hil"))
            from pumprig_hil import inventory
            from pumprig_hil.farm import take_place

            with pytest.raises(inventory.InventoryError, match="held by elsewhere/intruder"):
                take_place("lg:place-a", "gw0")
            # the rig's control relay: the shared store's token is not enough while another
            # client holds the place (the relay asks the coordinator: pumprig.farm_holders)
            os.environ.update(PUMPRIG_HOME=env["PUMPRIG_HOME"])
            from pumprig.farm_auth import ControlRefused

            seen = lgfarm.Lease("place-a").refresh()     # `show`: its resources, not held
            with lgfarm.remote_world(seen) as w, pytest.raises(
                    ControlRefused, match="place place-a is held by elsewhere/intruder, not by "
                                          "this client"):
                w.power_cut()
            assert _powered(farm, "hostA")
            lease = lgfarm.acquire_any(list(PLACES))
            assert lease.place == "place-b"
            assert lease.url.startswith("rfc2217://127.0.0.1:")
            # the balance: a second serial resource of the place, over its own ser2net port
            from pumprig.balance import Balance

            with Balance(lease.balance_url, timeout=10) as bal:
                assert isinstance(bal.weigh_now(), int)
            lease.release()
        finally:
            os.environ.clear()
            os.environ.update(old)
        assert _holders(farm) == {"place-a": "elsewhere/intruder", "place-b": None}
    finally:
        farm.lg("-p", "place-a", "release", user="intruder")
    # released: no one holds it, so no one uses its relay
    old = dict(os.environ)
    os.environ.update(PUMPRIG_HOME=str(farm.tmp / "client"))
    try:
        with lgfarm.remote_world(seen) as w, pytest.raises(
                ControlRefused, match="belongs to no acquired place"):
            w.measure()
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_commands_on_places_and_list_farm(farm):
    """flash and status on lg:PLACE through ser2net (RFC 2217), a virtual rig's power from another
    host, each place released after its command; `list --farm` shows places, rigs and
    holders. (Release after a failed command and on Ctrl-C: tests/host/test_farm_unit.py.)"""
    # flashing through the place: mpremote over the same RFC 2217 URL
    r = _pumprig(farm, "--port", "lg:place-b", "flash", timeout=600)
    assert r.returncode == 0, r.stderr
    assert re.search(r"flashed rfc2217://127\.0\.0\.1:\d+\?ign_set_control: \d+ copied", r.stdout)
    r = _pumprig(farm, "--port", "lg:place-b", "status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["board"] == "sim"
    r = _pumprig(farm, "list", "--farm", "--json")
    rows = {x["place"]: x for x in json.loads(r.stdout)}
    assert rows["place-a"]["rigs"] == ["hostA/rig-a"] and rows["place-b"]["held_by"] is None
    r = _pumprig(farm, "--port", "lg:place-a", "farm", "power", "cycle")
    assert r.returncode == 0 and r.stdout.strip() == "power on", r.stderr
    assert _holders(farm) == {"place-a": None, "place-b": None}


def test_wait_goes_through_a_reservation(farm):
    """--wait: queued behind the holder, served once it releases."""
    farm.lg("-p", "place-b", "acquire", user="intruder")
    env = farm.env(farm.tmp / "client")
    p = subprocess.Popen([str(BIN / "pumprig"), "--wait", "--port", "lg:place-b", "status"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "place-b" in farm.lg("reservations").stdout or p.poll() is not None,
              "the reservation")
        assert p.poll() is None, p.communicate()
        farm.lg("-p", "place-b", "release", user="intruder")
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "firmware" in out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        farm.lg("-p", "place-b", "release", user="intruder", check=False)
    assert _holders(farm) == {"place-a": None, "place-b": None}


def test_hil_on_two_remote_places(farm):
    """pytest hil --rig lg:place-a,place-b -n 2: each worker holds its own place for the
    session; the power-cut test and the battery brown-out (a forced cell voltage, a wipe and
    a 30-day-aged cell through the relay) run on remote virtual rigs; both places are
    released."""
    mark = len(farm.log(farm.coordinator))
    r = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-n", "2",
                        "hil/test_hil_power.py",
                        "hil/test_hil_clock.py::test_clock_get_reports_the_offset_in_force",
                        "hil/test_hil_battery.py::test_brownout_falls_back_to_the_minimum_rate",
                        "--rig", "lg:place-a,place-b"],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=farm.env(farm.tmp / "client", LG_USERNAME="hil-run"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"\b4 passed\b", r.stdout), r.stdout[-500:]
    log = farm.log(farm.coordinator)[mark:]
    for place in PLACES:
        assert re.search(r"%s: place acquired by \S+/hil-run" % place, log), log[-2000:]
        assert "%s: place released" % place in log
    assert _holders(farm) == {"place-a": None, "place-b": None}
    # each exporter started its own ser2net; hostB's with TCP_NODELAY through the wrapper
    a, b = (farm.log(farm.hosts[h]["exporter"]) for h in ("hostA", "hostB"))
    assert "started ser2net" in a and "started ser2net" in b
    wrapper = "Starting ser2net with: %s -d" % (farm.hosts["hostB"]["home"] / "bin" / "ser2net")
    assert wrapper in b and "Starting ser2net with: /usr/sbin/ser2net -d" in a


def test_a_bench_power_relay_through_labgrid(farm):
    """A bench's power relay exported from its rigs file: `farm power` and the HIL plugin's
    power cut switch it through labgrid-client and labgrid's own drivers (HttpDigitalOutput:
    PUT the asserted body; NetworkPowerPort simplerest: GET the outlet URL), and read it back.
    The relay is a stand-in HTTP server (tests/farm/_lab.py): no board loses power here. The
    bench's stall and occlusion lines are driven through its exporter host's instrument
    service, on a fake blinka there."""
    relay = farm.relay
    # an HTTP digital output: asserted = coil energised = supply cut (NC contact)
    r = _pumprig(farm, "--port", "lg:place-c", "farm", "power", "off")
    assert r.returncode == 0 and r.stdout.strip() == "power off", r.stderr
    assert ("PUT", "/coil", "1") in relay.requests and relay.coil == "1"
    assert relay.requests[-1] == ("GET", "/coil", "")     # read back: `io get power`
    # a power port: `labgrid-client power`
    r = _pumprig(farm, "--port", "lg:place-d", "farm", "power", "off")
    assert r.returncode == 0 and r.stdout.strip() == "power off", r.stderr
    assert ("GET", "/pdu/3/0", "") in relay.requests and relay.outlet == "0"
    r = _pumprig(farm, "--port", "lg:place-d", "farm", "power", "on")
    assert r.stdout.strip() == "power on" and relay.outlet == "1"
    # the HIL plugin on such a place: a board whose power_relay is the place's (no GPIO)
    env = farm.env(farm.tmp / "client")
    old = dict(os.environ)
    os.environ.update(LG_COORDINATOR=env["LG_COORDINATOR"], PUMPRIG_HOME=env["PUMPRIG_HOME"])
    try:
        sys.path.insert(0, str(REPO / "hil"))
        from pumprig_hil.farm import take_place

        lock = take_place("lg:place-c", "gw0")
        try:
            assert lock.spec.board == "rp2040"
            assert lock.spec.instruments == {"power_relay", "stall_injection",
                                             "occlusion_injection"}
            inst = lock.instruments()               # what HilRig.start gets on this place
            inst.power_on()
            assert relay.coil == "0"
            inst.power_cut()
            assert relay.coil == "1" and not inst.powered()
            # the adapter's lines: hostA's instrument service (signed), its fake blinka pins
            inst.stall(True)
            inst.occlude(True)
            assert json.loads(farm.pins.read_text()) == {"C3": True, "C4": True}
            inst.clear_faults()
            assert relay.coil == "0" and inst.readings()["power"] == "on"
            assert json.loads(farm.pins.read_text()) == {"C3": False, "C4": False}
            inst.close()
        finally:
            lock.release()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert _holders(farm, BENCHES) == {"place-c": None, "place-d": None}


def test_a_relay_without_a_view_of_the_coordinator_refuses_everything():
    """No coordinator answering: who holds the place is unknown, so nothing is obeyed."""
    import socket

    from pumprig.farm_auth import ControlRefused
    from pumprig.farm_holders import PlaceWatch, resource_path

    with socket.socket() as s:          # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = "127.0.0.1:%d" % s.getsockname()[1]
    watch = PlaceWatch(dead, "hostZ", ready_wait_s=1.0)
    try:
        with pytest.raises(ControlRefused, match="no view of the labgrid coordinator at %s"
                           % dead):
            watch.check(resource_path("hostZ", "rig-z", "control"), "hostC/ana")
    finally:
        watch.stop()
