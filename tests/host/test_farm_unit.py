"""Issue 15 (the farm), the parts that need no labgrid: what pumprig reads from labgrid-client,
the exporter configuration and udev rules it writes, the place held around a command and
released on errors and interrupts (with a stand-in labgrid-client), and the shared key store.
The end-to-end test with a real coordinator and exporters is tests/farm/test_farm.py."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest
from pumprig import farm, farm_export, keys
from pumprig.errors import AuthError

SHOW = """Place 'pa':
  matches:
    hostA/rigA/*
  acquired: vm/root
  acquired resources:
    hostA/rigA/NetworkSerialPort/balance
    hostA/rigA/NetworkSerialPort/console
  created: 2026-12-04 17:59:39.417594
Acquired resource 'balance' (hostA/rigA/NetworkSerialPort/balance):
  {'acquired': 'pa',
   'avail': True,
   'cls': 'NetworkSerialPort',
   'params': {'extra': {'path': '/dev/pts/10'},
              'host': 'hostA.lab',
              'port': 37735,
              'speed': 9600}}
Acquired resource 'console' (hostA/rigA/NetworkSerialPort/console):
  {'acquired': 'pa',
   'avail': True,
   'cls': 'NetworkSerialPort',
   'params': {'extra': {'path': '/dev/pts/9'},
              'host': 'hostA.lab',
              'port': 49021,
              'speed': 115200}}
Acquired resource 'control' (hostA/rigA/NetworkService/control):
  {'acquired': 'pa',
   'avail': True,
   'cls': 'NetworkService',
   'params': {'address': '10.1.2.3', 'port': 40001, 'username': 'pumprig'}}
"""


def test_show_gives_the_rfc2217_urls_and_the_control_service():
    info = farm.parse_show(SHOW)
    assert info["acquired"] == "vm/root" and info["matches"] == ["hostA/rigA/*"]
    lease = farm.Lease("pa")
    lease.resources = info["resources"]
    # ign_set_control: ser2net cannot set modem lines on a pty (issue 15)
    assert lease.url == "rfc2217://hostA.lab:49021?ign_set_control"
    assert lease.balance_url == "rfc2217://hostA.lab:37735?ign_set_control"
    assert lease.control == ("10.1.2.3", 40001)


def test_a_place_without_a_console_says_what_it_has():
    lease = farm.Lease("pb")
    lease.resources = {"power": {"cls": "NetworkPowerPort", "params": {}}}
    with pytest.raises(farm.FarmError, match="no serial port resource named 'console'.*power"):
        lease.url  # noqa: B018


def test_places_listing():
    text = "Place 'a':\n  matches:\n    h1/r1/*\n  acquired: h/u\n  comment: bench 3\n" \
           "Place 'b':\n  matches:\n    h2/r2/*\n    h2/bal/*\n  acquired: None\n"
    from pumprig.farm_command import place_rows

    rows = place_rows(farm.parse_places(text))
    assert rows == [
        {"place": "a", "rigs": ["h1/r1"], "held_by": "h/u", "comment": "bench 3"},
        {"place": "b", "rigs": ["h2/bal", "h2/r2"], "held_by": None, "comment": ""}]


def test_exporter_configuration_and_udev_rule(tmp_path):
    pts = tmp_path / "pts"
    pts.write_text("")
    link = tmp_path / "rig1"
    link.symlink_to(pts)
    boards = [{"port": "/dev/ttyACM0", "kind": "rp2040 (MicroPython)", "vid": "2E8A",
               "pid": "0005", "serial": "E6614103E7452D2F"},
              {"port": "/dev/ttyUSB0", "kind": "esp32 (CP210x)", "vid": "10C4", "pid": "EA60",
               "serial": None}]
    groups = farm_export.board_groups(boards, {"E6614103E7452D2F": "BAL1"})
    vg, relays = farm_export.virtual_groups(
        [{"name": "rig1", "port": str(link), "balance": None, "control": "/s/c.sock",
          "state": "/s", "uid": "ab12"}], "10.0.0.5", 30000)
    groups.update(vg)
    text = farm_export.exporter_yaml(groups)
    assert not text.lstrip().startswith("#")   # labgrid reads it as a Jinja2 template
    assert ("rp2040-E6614103E7452D2F:\n  console:\n    cls: \"USBSerialPort\"\n    match:\n"
            "      ID_SERIAL_SHORT: \"E6614103E7452D2F\"") in text
    assert "  balance:\n    cls: \"USBSerialPort\"\n    match:\n      ID_SERIAL_SHORT: \"BAL1\"" in text
    # the link is resolved: labgrid refuses a port path outside /dev
    assert "rig1:\n  console:\n    cls: \"RawSerialPort\"\n    port: %s" % json.dumps(str(pts)) in text
    assert "  control:\n    cls: \"NetworkService\"\n    address: \"10.0.0.5\"" in text
    assert relays == [(30000, "/s/c.sock", "/s", "ab12", "rig1")]
    rules = farm_export.udev_rules(boards)
    assert ('ATTRS{idVendor}=="2e8a", ATTRS{idProduct}=="0005", ATTRS{serial}=="E6614103E7452D2F"'
            ', MODE="0660", GROUP="dialout", SYMLINK+="pumprig/E6614103E7452D2F"') in rules
    assert rules.count("SUBSYSTEM") == 1  # no serial number, no rule


# ------------------------------------------------------------------ a stand-in labgrid-client

FAKE = textwrap.dedent('''\
    #!{python}
    import os, sys
    args = sys.argv[1:]
    log = os.environ["FAKE_LG_LOG"]
    with open(log, "a") as f:
        f.write(" ".join(args) + "\\n")
    cmd = [a for a in args if a in ("acquire", "release", "show", "reserve")]
    if os.environ.get("FAKE_LG_BUSY") and "acquire" in cmd:
        sys.stderr.write("labgrid-client: Error: Place pa is already acquired by h9/eve. To "
                         "work simultaneously, eve can execute ...\\n")
        sys.exit(1)
    if "show" in cmd:
        sys.stdout.write(open(os.environ["FAKE_LG_SHOW"]).read())
    if args[-2:] == ["get", "power"]:
        sys.stdout.write("digital IO power for place pa is high\\n")
    if args[-3:] == ["get", "--name", "power"]:
        sys.stdout.write("power power for place pa is on\\n")
''')


@pytest.fixture
def fake_lg(tmp_path, monkeypatch, home):
    exe = tmp_path / "labgrid-client"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    log = tmp_path / "lg.log"
    show = tmp_path / "show.txt"
    monkeypatch.setenv("PUMPRIG_LABGRID_CLIENT", str(exe))
    monkeypatch.setenv("FAKE_LG_LOG", str(log))
    monkeypatch.setenv("FAKE_LG_SHOW", str(show))
    return log, show


def _show_for(port):
    return SHOW.replace("hostA.lab", "127.0.0.1").replace("49021", str(port))


def _commands(log):
    out = []
    for line in log.read_text().splitlines():
        for c in ("acquire", "release", "show", "reserve", "cancel-reservation"):
            if c in line.split():
                out.append(c)
    return out


def _pumprig(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pumprig.cli"] + list(args),
                          capture_output=True, text=True, timeout=60, **kw)


def test_a_place_is_released_after_a_failed_command(fake_lg):
    """The rig does not answer (nothing listens at its port): an error, and the place is
    released."""
    log, show = fake_lg
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    show.write_text(_show_for(port))
    r = _pumprig("--port", "lg:pa", "status")
    assert r.returncode == 1 and r.stderr.startswith("pumprig: ") and "Traceback" not in r.stderr
    assert _commands(log) == ["acquire", "show", "release"]


def test_a_held_place_is_a_clear_error_and_nothing_else_happens(fake_lg, monkeypatch):
    log, show = fake_lg
    monkeypatch.setenv("FAKE_LG_BUSY", "1")
    r = _pumprig("--port", "lg:pa", "status")
    assert r.returncode == 1
    assert r.stderr.startswith("pumprig: place pa is held by h9/eve: wait for it with --wait")
    assert _commands(log) == ["acquire"]


def test_the_place_is_released_on_ctrl_c_and_sigterm(fake_lg):
    """The rig's port accepts but never answers: pumprig hangs in the open, is interrupted,
    and still releases the place."""
    log, show = fake_lg
    for sig in (signal.SIGINT, signal.SIGTERM):
        log.write_text("")
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen(1)
            show.write_text(_show_for(srv.getsockname()[1]))
            p = subprocess.Popen([sys.executable, "-m", "pumprig.cli", "--timeout", "30",
                                  "--port", "lg:pa", "status"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            conn = None
            try:
                srv.settimeout(30)
                conn, _ = srv.accept()     # it is connecting to the rig: the place is held
                assert _commands(log) == ["acquire", "show"]
                p.send_signal(sig)
                out, err = p.communicate(timeout=30)
            finally:
                if conn is not None:
                    conn.close()
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert p.returncode == 1 and "Traceback" not in err, err
        assert _commands(log) == ["acquire", "show", "release"], sig


def test_wait_takes_the_place_through_a_reservation(fake_lg, tmp_path):
    log, show = fake_lg
    show.write_text(_show_for(1))
    fake = (tmp_path / "labgrid-client").read_text()
    (tmp_path / "labgrid-client").write_text(fake.replace(
        'if "show" in cmd:', 'if "reserve" in cmd:\n    print("export LG_TOKEN=TOK42")\nif "show" in cmd:'))
    lease = farm.acquire("lg:pa", wait=True)
    assert lease.token == "TOK42" and lease.url == "rfc2217://127.0.0.1:1?ign_set_control"
    lease.release()
    lines = log.read_text().splitlines()
    assert lines[0].split()[-3:] == ["--wait", "--shell", "name=pa"]
    assert "-p + acquire" in lines[1]          # LG_TOKEN names the reserved place
    assert _commands(log) == ["reserve", "acquire", "show", "release", "cancel-reservation"]


def test_without_labgrid_the_cli_says_what_to_install(home, monkeypatch, tmp_path):
    monkeypatch.setenv("PUMPRIG_LABGRID_CLIENT", str(tmp_path / "missing"))
    r = _pumprig("--port", "lg:pa", "status")
    assert r.returncode == 1 and "pip install 'pumprig[farm]'" in r.stderr


def test_lg_with_no_name_is_a_usage_error():
    with pytest.raises(farm.FarmError, match="names no place"):
        farm.place_names("lg:")


# ------------------------------------------------------------------ keys across hosts

def test_the_key_store_location_comes_from_the_configuration(tmp_path):
    shared = tmp_path / "lab" / "keys.json"
    for h in ("hostA", "hostB"):
        (tmp_path / h).mkdir()
        (tmp_path / h / "config.toml").write_text('keys = "%s"\n' % shared)
    k = keys.generate()
    keys.KeyStore(tmp_path / "hostA").save("aa11", k)
    assert keys.KeyStore(tmp_path / "hostB").key("aa11", "clinician") == k["clinician"]
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(shared.parent).st_mode) == 0o700


def test_a_world_readable_store_is_closed_or_refused(tmp_path, monkeypatch):
    store = keys.KeyStore(tmp_path)
    store.save("bb22", keys.generate())
    os.chmod(store.path, 0o644)
    store.load()
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o640   # ours: closed to others
    os.chmod(store.path, 0o604)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(store.path).st_uid + 1)
    with pytest.raises(AuthError, match="open to every user"):
        store.load()  # someone else's store: refused, left as it is
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o604


def test_hosts_saving_at_once_keep_every_key(tmp_path):
    """Two hosts provisioning at the same time into the shared store: no lost update."""
    code = ("import sys; from pumprig import keys; s = keys.KeyStore(sys.argv[1]); "
            "[s.save('%s%02d' % (sys.argv[2], i), keys.generate()) for i in range(15)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag])
             for tag in ("a", "b", "c")]
    for p in procs:
        assert p.wait(timeout=60) == 0
    assert len(keys.KeyStore(tmp_path).load()) == 45


def test_a_bad_configuration_is_named(tmp_path):
    (tmp_path / "config.toml").write_text("keys = 3\n")
    with pytest.raises(AuthError, match="config.toml: keys must be"):
        keys.KeyStore(tmp_path)



def test_commands_that_use_no_port_do_not_take_the_place(fake_lg, monkeypatch):
    """PUMPRIG_PORT=lg:pa must not acquire the place for `list --farm` or `farm places`."""
    log, show = fake_lg
    show.write_text(SHOW)
    monkeypatch.setenv("PUMPRIG_PORT", "lg:pa")
    for args in (["list", "--farm"], ["farm", "places", "--json"], ["plan", "check", "x.toml"]):
        log.write_text("")
        _pumprig(*args)
        assert "acquire" not in _commands(log), args
    r = _pumprig("farm", "places", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []   # the stand-in prints no place


# ------------------------------------------------------------------ a bench's power relay

def test_bench_rigs_are_exported_with_their_power_relay(tmp_path):
    rigs = [{"name": "pico 1", "board": "rp2040", "serial": "E661", "instruments": ["balance"],
             "balance": {"port": "/dev/ttyUSB0", "baudrate": 4800},
             "power": {"cls": "ModbusTCPCoil", "host": "10.0.0.9", "coil": 2}},
            {"name": "esp", "board": "esp32", "port": "/dev/ttyUSB1",
             "power": {"cls": "NetworkPowerPort", "model": "gude", "host": "pdu1", "index": 4}},
            {"name": "sim-x", "board": "sim"}]
    groups, services = farm_export.bench_groups(rigs)
    assert services == []                      # no address: no instrument service
    assert groups == {
        "pico-1": {"console": {"cls": "USBSerialPort", "match": {"ID_SERIAL_SHORT": "E661"},
                               "speed": 115200},
                   "balance": {"cls": "RawSerialPort", "port": "/dev/ttyUSB0", "speed": 4800},
                   "power": {"cls": "ModbusTCPCoil", "host": "10.0.0.9", "coil": 2}},
        "esp": {"console": {"cls": "RawSerialPort", "port": "/dev/ttyUSB1", "speed": 115200},
                "power": {"cls": "NetworkPowerPort", "model": "gude", "host": "pdu1",
                          "index": 4}}}
    # with an address: the instrument service of a rig with instruments on its adapter
    rigs[1].update(adapter="ft232h", instruments=["steps", "power_relay", "stall_injection"])
    groups, services = farm_export.bench_groups(rigs, "r.toml", "hostA.lab", 20600)
    assert services == [(20600, rigs[1], "esp")] and "instruments" not in groups["pico-1"]
    assert groups["esp"]["instruments"] == {"cls": "NetworkService", "address": "hostA.lab",
                                            "username": "pumprig", "port": 20600}
    text = farm_export.exporter_yaml(groups)
    assert "  power:\n    cls: \"ModbusTCPCoil\"\n    host: \"10.0.0.9\"\n    coil: 2" in text
    # a GPIO of the exporter host is exported by labgrid as NetworkSysfsGPIO: accepted
    assert farm_export.bench_groups([{"name": "g", "board": "rp2040", "port": "/dev/ttyACM0",
                                      "power": {"cls": "SysfsGPIO", "index": 12}}])
    with pytest.raises(farm.PumprigError, match=r"rig x: \[rig.power\] cls must be a labgrid "
                                                r"power port or digital output .* not 'Relay'"):
        farm_export.bench_groups([{"name": "x", "board": "rp2040", "port": "/dev/ttyACM0",
                                   "power": {"cls": "Relay"}}])
    with pytest.raises(farm.PumprigError, match="a device under /dev/"):
        farm_export.bench_groups([{"name": "y", "board": "rp2040", "port": str(tmp_path)}])


def _lease(cls):
    lease = farm.Lease("pa")
    lease.resources = {"power": {"cls": cls, "params": {}}}
    return lease


def test_a_place_power_relay_goes_through_labgrid_client(fake_lg):
    log, _ = fake_lg
    out = _lease("HttpDigitalOutput")
    assert out.power_switch == "output"
    assert out.power("off") is False and out.power("on") is True
    assert out.power("get") is False            # the fake says "high": the coil cuts the supply
    port = _lease("NetworkPowerPort")
    assert port.power_switch == "port"
    assert port.power("off") is False and port.power("get") is True
    cmds = [line.split("-p pa ", 1)[1] for line in log.read_text().splitlines()]
    assert cmds == ["io high power", "io low power", "io get power",
                    "power off --name power", "power get --name power"]
    with pytest.raises(farm.FarmError, match="place pa has no power relay: its `power` resource "
                                             "is a NetworkSerialPort"):
        _lease("NetworkSerialPort").power("off")
    lease = farm.Lease("pa")
    with pytest.raises(farm.FarmError, match="no resource named `power`"):
        lease.power("get")
