"""The exporter side of a farm: labgrid exporter configuration for the rigs on this host (its
boards, the benches of a rigs file with their power relays, its virtual rigs), the udev rule
for its boards, and the TCP services that make a virtual rig's control socket (power cut,
world measurements, records wipe) and a bench's GPIO instruments reachable from other hosts,
to clients that hold the rig's token (pumprig.farm_auth).

Each rig is one exporter group, named after the rig; its resources have fixed names the client
looks for (pumprig.farm.Lease): `console` (the rig's serial port), `balance` (the balance's
serial port, when there is one), `control` (a virtual rig's control service), `power` (a
bench's relay, a labgrid resource) and `instruments` (a bench's instrument service).
"""

import json
import os
import re
import shutil
import socket
import socketserver
import threading

from pumprig.errors import PumprigError

CONTROL_BASE_PORT = 20500
# ops the relay answers itself (the rest goes to the rig's control socket unchanged)
LOCAL_OPS = ("wipe_records",)


def _group(name):
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def board_groups(boards, balances=None):
    """Exporter groups for attached boards: {group: {resource: {...}}}. Boards are matched by
    their USB serial number (udev's ID_SERIAL_SHORT), so a re-plug on another USB port is the
    same resource. balances: {board serial: balance USB serial}."""
    balances = balances or {}
    out = {}
    for b in boards:
        sn = b.get("serial")
        if not sn:
            continue
        kind = (b.get("kind") or "board").split()[0]
        g = {"console": {"cls": "USBSerialPort", "match": {"ID_SERIAL_SHORT": sn},
                         "speed": 115200}}
        bal = balances.get(sn)
        if bal:
            g["balance"] = {"cls": "USBSerialPort", "match": {"ID_SERIAL_SHORT": bal},
                            "speed": 9600}
        out[_group("%s-%s" % (kind, sn))] = g
    return out


def power_resource(spec, where):
    """A bench's `[rig.power]` table as an exporter resource: `cls` (a labgrid class that
    pumprig.farm switches, named as the exporter knows it) and that class's own parameters."""
    from pumprig.farm import DIGITAL_OUTPUTS, POWER_PORTS

    cls = spec.get("cls") if isinstance(spec, dict) else None
    known = POWER_PORTS + DIGITAL_OUTPUTS
    if cls not in known and "Network%s" % cls not in known:
        raise PumprigError(
            "%s: [rig.power] cls must be a labgrid power port or digital output (%s), not %r"
            % (where, ", ".join(sorted({c.replace("Network", "", 1) if c != "NetworkPowerPort"
                                        else c for c in known})), cls))
    return dict(spec)


def bench_groups(rigs, where="rigs file", address=None, first_port=None):
    """Exporter groups for the bench rigs of a rigs file (hil/rigs.toml `[[rig]]` tables):
    `console` by USB serial number (USBSerialPort) or port (RawSerialPort, a path under /dev),
    `balance` from [rig.balance] (`serial` or `port`), `power` from [rig.power], and, with an
    address, `instruments`: a NetworkService at address:first_port+i for each rig with
    instruments on its GPIO adapter, which `Relays` serves. Returns (groups, services) with
    services [(port, rig, group)]."""
    from pumprig_hil.farm import service_features

    out, services = {}, []
    for r in rigs:
        if r.get("board") == "sim":
            continue
        name = r.get("name") or "?"
        here = "%s, rig %s" % (where, name)
        g = {"console": _serial_resource(r, 115200, here)}
        bal = r.get("balance") or {}
        if bal:
            g["balance"] = _serial_resource(bal, int(bal.get("baudrate", 9600)), here + " balance")
        if r.get("power") is not None:
            g["power"] = power_resource(r["power"], here)
        if address is not None and service_features(r):
            port = first_port + len(services)
            g["instruments"] = {"cls": "NetworkService", "address": address,
                                "username": "pumprig", "port": port}
            services.append((port, r, _group(name)))
        out[_group(name)] = g
    return out, services


def _serial_resource(d, speed, where):
    if d.get("serial"):
        return {"cls": "USBSerialPort", "match": {"ID_SERIAL_SHORT": d["serial"]}, "speed": speed}
    port = d.get("port") or ""
    if port and not port.startswith("/dev/"):
        port = os.path.realpath(port)
    if not port.startswith("/dev/"):
        raise PumprigError("%s: give `serial` (a USB serial number) or `port` (a device under "
                           "/dev/, which labgrid requires)" % where)
    return {"cls": "RawSerialPort", "port": port, "speed": speed}


def virtual_groups(rigs, address, base_port=CONTROL_BASE_PORT):
    """Exporter groups for running virtual rigs (pumprig.ports.list_virtual entries): their
    ptys as RawSerialPort (labgrid wants the /dev/pts/N path, not the link) and the control
    relay as a NetworkService at address:base_port+i. Returns (groups, relays) with relays
    [(port, control socket path, state dir, uid, group)]."""
    groups, relays = {}, []
    for i, r in enumerate(rigs):
        console = os.path.realpath(r["port"])
        g = {"console": {"cls": "RawSerialPort", "port": console, "speed": 115200}}
        if r.get("balance") and os.path.exists(r["balance"]):
            g["balance"] = {"cls": "RawSerialPort", "port": os.path.realpath(r["balance"]),
                            "speed": 9600}
        port = base_port + i
        g["control"] = {"cls": "NetworkService", "address": address, "username": "pumprig",
                        "port": port}
        groups[_group(r["name"])] = g
        relays.append((port, r.get("control"), r.get("state"), r.get("uid"), _group(r["name"])))
    return groups, relays


def exporter_yaml(groups):
    """The exporter configuration text (YAML; JSON scalars are valid YAML)."""
    # no comment line: labgrid reads the file as a Jinja2 template, where `#` starts a statement
    lines = []
    for g, res in groups.items():
        lines.append("%s:" % g)
        for name, spec in res.items():
            lines.append("  %s:" % name)
            for k, v in spec.items():
                if isinstance(v, dict):
                    lines.append("    %s:" % k)
                    for kk, vv in v.items():
                        lines.append("      %s: %s" % (kk, json.dumps(vv)))
                else:
                    lines.append("    %s: %s" % (k, json.dumps(v)))
    return "\n".join(lines) + "\n"


def udev_rules(boards, group="dialout"):
    """udev rules that give every attached board a stable name and let the exporter's user
    (group `group`) open it: /dev/pumprig/<serial>."""
    lines = ["# pumprig boards: install as /etc/udev/rules.d/60-pumprig.rules, then",
             "#   udevadm control --reload && udevadm trigger --subsystem-match=tty"]
    for b in boards:
        sn = b.get("serial")
        if not sn:
            continue
        lines.append('SUBSYSTEM=="tty", ATTRS{idVendor}=="%s", ATTRS{idProduct}=="%s", '
                     'ATTRS{serial}=="%s", MODE="0660", GROUP="%s", SYMLINK+="pumprig/%s"'
                     % (b["vid"].lower(), b["pid"].lower(), sn, group, sn))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ control relay

class _Signed(socketserver.StreamRequestHandler):
    """One client connection: the challenge, then signed requests only (pumprig.farm_auth),
    each from the holder of the service's place (its `holder` field, checked by the server's
    `holders`: pumprig.farm_holders), answered by answer(request, its JSON text) with the
    reply's JSON text; the first refused request ends the connection."""

    def handle(self):
        from pumprig.farm_auth import ControlRefused, Guard, refusal

        guard = Guard(self.server.token, self.server.uid)
        try:
            self.wfile.write(guard.hello())
            self.wfile.flush()
            for line in self.rfile:
                if not line.strip():
                    continue
                try:
                    body = guard.check(line)
                    try:
                        req = json.loads(body)
                    except ValueError:
                        req = None
                    if isinstance(req, dict):
                        # the place's holder only; the rest of the request goes on as it came
                        self.server.holders.check(self.server.path, req.pop("holder", None))
                        body = json.dumps(req)
                except ControlRefused as e:
                    self.wfile.write(refusal(str(e)))
                    self.wfile.flush()
                    return
                if isinstance(req, dict):
                    reply = self.answer(req, body)
                else:
                    reply = json.dumps({"ok": False, "error": "not a JSON object"})
                if reply is None:
                    break
                self.wfile.write(guard.seal(reply))
                self.wfile.flush()
        except OSError:
            pass
        finally:
            self.done()

    def answer(self, req, body):
        raise NotImplementedError

    def done(self):
        pass


class _Handler(_Signed):
    """A virtual rig: requests forwarded to its control socket, LOCAL_OPS done here."""

    up = None

    def answer(self, req, body):
        target, state = self.server.rig
        if req.get("op") in LOCAL_OPS:
            return json.dumps(self._local(req, target, state))
        if self.up is None:
            self.up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.up.connect(target)
            self.upr = self.up.makefile("rb")
        self.up.sendall(body.encode() + b"\n")
        reply = self.upr.readline()
        return reply.decode().rstrip("\n") if reply else None

    def done(self):
        if self.up is not None:
            self.up.close()

    @staticmethod
    def _local(req, target, state):
        """wipe_records: power cut, delete the board's records (keys kept), power on: what a
        HIL `fresh_rig` does to a virtual rig on its own host."""
        from pumprig.virtual.control import WorldClient
        from pumprig.virtual.rig import wipe_records

        try:
            with WorldClient(target) as w:
                wipe_records(w, os.path.join(state, "fs"))
            return {"ok": True, "result": None}
        except (OSError, PumprigError) as e:
            return {"ok": False, "error": str(e)}


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _InstrumentHandler(_Signed):
    """A bench's instruments (a BenchInstruments on this host's GPIO adapter), one request at
    a time (pumprig_hil.farm.serve)."""

    def answer(self, req, body):
        from pumprig_hil.farm import serve

        with self.server.lock:
            return json.dumps(serve(self.server.instruments, req))


class Relays:
    """TCP services of this host's rigs, one port each, answering only clients that hold the
    rig's token (pumprig.farm_auth.rig_token: made at the first export, written to the rig's
    state folder and to the key store of `home`) and hold the labgrid place the service belongs
    to (`holders`, a pumprig.farm_holders.PlaceWatch on the coordinator; this exporter's
    resources are named after `exporter`, labgrid-exporter's --name): relays to the control
    sockets of its virtual rigs, and the instrument services of its benches.

    relays: [(port, control socket, state dir, uid, group)]; benches: [(port, group,
    instruments)] with instruments a BenchInstruments (pumprig_hil.farm.bench_instruments), its
    token kept in $PUMPRIG_HOME/farm/GROUP/ under the key store id `bench-GROUP`."""

    def __init__(self, relays, address, holders, exporter, home=None, benches=()):
        from pumprig.farm_auth import rig_token
        from pumprig.farm_holders import resource_path
        from pumprig.keys import pumprig_home

        self.servers = []
        self.benches = []
        self.holders = holders
        try:
            for port, control, state, uid, group in relays:
                token = rig_token(state, uid, home)
                s = _Server((address, port), _Handler)
                s.rig = (control, state)
                s.token, s.uid = token, uid
                s.holders, s.path = holders, resource_path(exporter, group, "control")
                self.servers.append(s)
            for port, group, inst in benches:
                state = pumprig_home(home) / "farm" / group
                state.mkdir(mode=0o700, parents=True, exist_ok=True)
                uid = "bench-" + group
                s = _Server((address, port), _InstrumentHandler)
                s.token, s.uid = rig_token(str(state), uid, home), uid
                s.holders, s.path = holders, resource_path(exporter, group, "instruments")
                s.instruments, s.lock = inst, threading.Lock()
                self.servers.append(s)
                self.benches.append(inst)
        except BaseException:
            for s in self.servers:
                s.server_close()
            raise
        self.threads = []

    def start(self):
        for s in self.servers:
            t = threading.Thread(target=s.serve_forever, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()
        for inst in self.benches:
            inst.close()
        stop = getattr(self.holders, "stop", None)
        if stop is not None:
            stop()


# ------------------------------------------------------------------------------ ser2net nodelay

# labgrid's exporter starts ser2net with a plain `tcp` accepter: no TCP_NODELAY, so a reply that
# ser2net sends in two segments waits for the client's delayed ACK (about 40 ms a round trip on
# Linux, docs/benchmarks.md). The exporter finds ser2net on PATH: this wrapper, first on the
# exporter's PATH, adds `nodelay` to the accepter and runs the real ser2net.
WRAPPER = '''#!/bin/sh
# ser2net with TCP_NODELAY on labgrid's accepters (written by `pumprig farm export`)
a=""
for x in "$@"; do
  case "$x" in
    *"),tcp,"*) x=$(printf '%%s' "$x" | sed 's/),tcp,/),tcp(nodelay),/') ;;
  esac
  a="$a$(printf '%%s' "$x" | sed "s/'/'\\\\\\\\''/g; s/^/'/; s/\\$/' /")"
done
eval "exec %(real)s $a"
'''


def real_ser2net(skip_dir=None):
    """The ser2net binary (not a wrapper in skip_dir), or None."""
    path = os.environ.get("PATH", "")
    dirs = [d for d in path.split(os.pathsep) if d and os.path.abspath(d) != skip_dir]
    found = shutil.which("ser2net", path=os.pathsep.join(dirs + ["/usr/sbin"]))
    return found


def write_ser2net_wrapper(directory):
    """DIR/ser2net, the nodelay wrapper; the exporter is started with PATH=DIR:$PATH."""
    directory = os.path.abspath(directory)
    real = real_ser2net(skip_dir=directory)
    if real is None:
        raise PumprigError("ser2net is not installed: run  sudo apt-get install -y ser2net")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "ser2net")
    with open(path, "w") as f:
        f.write(WRAPPER % {"real": real})
    os.chmod(path, 0o755)
    return path
