"""A farm on one machine, for the farm test and bench/bench_farm.py: a labgrid coordinator on
127.0.0.1 and exporter "hosts", each with its own PUMPRIG_HOME, virtual rig (firmware
installed, warp mode), `pumprig farm export --relay` and labgrid-exporter (which starts its own
ser2net on acquire); one key store shared by configuration. Needs the labgrid environment
(.venv-farm). Everything runs in its own process group and is killed by stop()."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BIN = Path(sys.executable).parent
PLACES = ("place-a", "place-b")
# bench stand-ins on hostA (rigs file): a pty as the board's port, the power relay on the
# stand-in below, as an HTTP digital output (place-c) and as a simplerest power port (place-d);
# place-c's stall and occlusion lines on hostA's GPIO adapter: blinka's modules replaced by
# FAKE_BLINKA in its `farm export --relay`, which writes the pins' levels to Farm.pins
BENCHES = {"place-c": "bench-c", "place-d": "bench-d"}
FAKE_BLINKA = Path(__file__).resolve().parent / "fake_blinka"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, what, timeout_s=60.0, procs=()):
    end = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError("%s: a process exited (%s) while waiting" % (what, p.args))
        if time.monotonic() > end:
            raise TimeoutError("timed out waiting for %s" % what)
        time.sleep(0.1)


class RelayStandIn:
    """What a lab's network relay answers, for labgrid's own drivers run by labgrid-client on
    the client: PUT /coil with body 1 or 0 energises or releases an HttpDigitalOutput's coil,
    GET /coil reads it; GET /pdu/3/1 or /pdu/3/0 switches a simplerest NetworkPowerPort's
    outlet 3 on or off, GET /pdu/3 reads it. Records every request as (method, path, body)."""

    def __init__(self):
        self.coil = "0"
        self.outlet = "1"
        self.requests = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, text):
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                me.requests.append(("PUT", self.path, body))
                if self.path == "/coil" and body in ("0", "1"):
                    me.coil = body
                    return self._answer("")
                self.send_error(404)

            def do_GET(self):
                me.requests.append(("GET", self.path, ""))
                if self.path == "/coil":
                    return self._answer(me.coil)
                parts = self.path.strip("/").split("/")
                if parts[:2] == ["pdu", "3"] and len(parts) <= 3:
                    if len(parts) == 3:
                        me.outlet = parts[2]
                    return self._answer(me.outlet)
                self.send_error(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rigs_toml(self, ports):
        """hostA's rigs file: the two benches, their ports and power relays; bench-c's stall
        and occlusion lines on a GPIO adapter (fake blinka, FAKE_BLINKA below)."""
        return (
            '[[rig]]\nname = "bench-c"\nboard = "rp2040"\nport = "%s"\nadapter = "ft232h"\n'
            'instruments = ["stall_injection", "occlusion_injection"]\n'
            '[rig.power]\ncls = "HttpDigitalOutput"\nurl = "%s/coil"\n'
            'body_asserted = "1"\nbody_deasserted = "0"\n\n'
            '[[rig]]\nname = "bench-d"\nboard = "rp2040"\nport = "%s"\n'
            '[rig.power]\ncls = "NetworkPowerPort"\nmodel = "simplerest"\n'
            'host = "%s/pdu/{index}/{value}"\nindex = 3\n'
            % (ports[0], self.url, ports[1], self.url))

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Farm:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.coord = "127.0.0.1:%d" % _free_port()
        self.keys = tmp / "shared" / "keys.json"   # a lab would mount this on every host
        self.relay = None
        self.ptys = []
        self.pins = tmp / "hostA-pins.json"

    def env(self, home, **extra):
        e = dict(os.environ)
        e.update(PUMPRIG_HOME=str(home), LG_COORDINATOR=self.coord)
        e.pop("PUMPRIG_PORT", None)
        e.pop("PUMPRIG_RIG", None)
        e.update(extra)
        return e

    def home(self, name):
        h = self.tmp / name
        h.mkdir(mode=0o700)
        (h / "config.toml").write_text('keys = "%s"\n' % self.keys)
        return h

    def spawn(self, argv, env, log, cwd=None):
        f = open(self.tmp / log, "wb")
        p = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        p.log = self.tmp / log
        self.procs.append(p)
        return p

    def log(self, p):
        return p.log.read_text(errors="replace")

    def lg(self, *args, user=None, check=True):
        env = self.env(self.tmp / "client")
        if user:
            env.update(LG_USERNAME=user, LG_HOSTNAME="elsewhere")
        r = subprocess.run([str(BIN / "labgrid-client"), "-x", self.coord] + list(args),
                           env=env, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError("labgrid-client %s: %s" % (" ".join(args), r.stderr))
        return r

    def stop(self):
        if self.relay is not None:
            self.relay.stop()
        for fd in self.ptys:
            os.close(fd)
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            # the exporters' ser2net children share the group: nothing of ours survives
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _start_host(farm, name, nodelay=False, rigs=None):
    """One exporter host: a virtual rig with the firmware, the relay, the exporter (its
    ser2net with TCP_NODELAY through `farm export --ser2net-nodelay` when nodelay)."""
    from pumprig.virtual.control import WorldClient
    from pumprig.virtual.firmware import install as install_firmware
    from pumprig.virtual.supervisor import find_micropython

    home = farm.home(name)
    env = farm.env(home)
    rig = "rig-" + name[-1].lower()
    link, state = home / rig, home / "state"
    sim = farm.spawn([str(BIN / "pumprig"), "sim", "--link", str(link), "--state", str(state),
                      "--blank", "--warp"], env, name + "-sim.log")
    ctl = state / "control.sock"
    wait_for(lambda: link.exists() and ctl.exists() and (home / "rigs" / (rig + ".json")).exists(),
          "the virtual rig on " + name, procs=[sim])
    install_firmware(str(state / "fs"), find_micropython())  # the .mpy set, as flash installs it
    with WorldClient(str(ctl)) as w:
        w.reset()
    yaml = home / "exporter.yaml"
    port = _free_port()
    extra, xenv = [], env
    if nodelay:
        extra = ["--ser2net-nodelay", str(home / "bin")]
        xenv = dict(env, PATH=str(home / "bin") + os.pathsep + env.get("PATH", ""))
    renv = env
    if rigs:  # the rigs file's adapter: fake blinka, its pins' levels in farm.pins
        renv = dict(env, PYTHONPATH=str(FAKE_BLINKA), FAKE_BLINKA_LOG=str(farm.pins))
    relay = farm.spawn([str(BIN / "pumprig"), "farm", "export", "--no-boards", "--address",
                        "127.0.0.1", "--control-port", str(port), "--relay", "--out", str(yaml),
                        "--exporter-name", name]
                       + extra + (["--rigs", str(rigs)] if rigs else []), renv, name + "-relay.log")
    wait_for(lambda: "control relays" in farm.log(relay), "the relay on " + name, procs=[relay])
    exporter = farm.spawn([str(BIN / "labgrid-exporter"), "-c", farm.coord, "--name", name,
                           "--hostname", "127.0.0.1", str(yaml)], xenv, name + "-exporter.log")
    return {"home": home, "rig": rig, "yaml": yaml, "exporter": exporter, "sim": sim}


def start_farm(tmp, nodelay=("hostB",)):
    """The coordinator, hostA and hostB, places place-a and place-b; a Farm (stop() it).
    The hosts in `nodelay` run ser2net with TCP_NODELAY (the others as labgrid starts it)."""
    f = Farm(tmp)
    try:
        (f.tmp / "coord").mkdir(parents=True)
        f.coordinator = f.spawn([str(BIN / "labgrid-coordinator"), "-l", f.coord],
                                f.env(f.tmp), "coordinator.log", cwd=f.tmp / "coord")
        f.home("client")
        f.relay = RelayStandIn()
        ports = []
        for _ in BENCHES:
            master, slave = os.openpty()
            f.ptys += [master, slave]
            ports.append(os.ttyname(slave))
        rigs = f.tmp / "rigs.toml"
        rigs.write_text(f.relay.rigs_toml(ports))
        f.hosts = {}
        for name in ("hostA", "hostB"):
            f.hosts[name] = _start_host(f, name, nodelay=name in nodelay,
                                        rigs=rigs if name == "hostA" else None)
        for name, place in zip(("hostA", "hostB"), PLACES, strict=True):
            f.lg("-p", place, "create")
            f.lg("-p", place, "add-match", "%s/%s/*" % (name, f.hosts[name]["rig"]))
        for place, group in BENCHES.items():
            f.lg("-p", place, "create")
            f.lg("-p", place, "add-match", "hostA/%s/*" % group)
        procs = [f.coordinator] + [h["exporter"] for h in f.hosts.values()]
        want = ["%s/%s/NetworkService" % (n, h["rig"]) for n, h in f.hosts.items()]
        want += ["hostA/bench-c/HttpDigitalOutput", "hostA/bench-d/NetworkPowerPort",
                 "hostA/bench-c/NetworkService"]
        wait_for(lambda: all(w in f.lg("resources").stdout for w in want),
                 "both exporters' resources", procs=procs)
    except BaseException:
        f.stop()
        raise
    return f
