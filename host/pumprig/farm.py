"""Rigs shared across lab hosts through labgrid: `lg:PLACE` ports, places, exporter configs.

    with farm.hold("lg:rig-a") as lease:      # acquired through the coordinator ($LG_COORDINATOR)
        Client(lease.url)                     # rfc2217://HOST:PORT?ign_set_control (ser2net)
        lease.balance_url, lease.control      # the balance port, the virtual rig's control service
    # released here, also on Ctrl-C and on errors

labgrid is driven through its own command line (`labgrid-client`), so pumprig needs no labgrid
import: it can live in another virtual environment (docs/farm.md says why). Library code: every
failure is a FarmError (a PumprigError) with a message the CLI prints as it is.
"""

import ast
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager

from pumprig.errors import FarmError, PumprigError

PREFIX = "lg:"
# ser2net cannot set modem lines on a pty (a virtual rig): the client must not wait for it
RFC2217_OPTS = "?ign_set_control"
LG_TIMEOUT_S = 60.0

# A bench's power relay on a place: the place's resource named `power`, of one of the labgrid
# classes below (as a client sees them: an exporter's SysfsGPIO is a NetworkSysfsGPIO).
# A power port is cut with `labgrid-client power off`. A digital output is the coil of a relay
# in the board's supply, wired through its normally closed contact as a bench's own relay
# (hil/pumprig_hil/instruments.py): asserted (`labgrid-client io high power`) cuts the power.
POWER_PORTS = ("NetworkPowerPort", "PDUDaemonPort", "TasmotaPowerPort", "NetworkYKUSHPowerPort",
               "NetworkUSBPowerPort", "NetworkSiSPMPowerPort")
DIGITAL_OUTPUTS = ("HttpDigitalOutput", "ModbusTCPCoil", "WaveshareModbusTCPCoil",
                   "Eth008DigitalOutput", "OneWirePIO", "NetworkDeditecRelais8",
                   "NetworkSysfsGPIO", "NetworkLXAIOBusPIO", "NetworkHIDRelay")
POWER = "power"


class PlaceBusy(FarmError):
    """The place is acquired by another client (`holder` names it)."""

    def __init__(self, place, holder):
        super().__init__(
            "place %s is held by %s: wait for it with --wait (a labgrid reservation), or ask "
            "them to run `labgrid-client -p %s release`" % (place, holder, place))
        self.place = place
        self.holder = holder


def is_place(port):
    return isinstance(port, str) and port.startswith(PREFIX)


def place_names(port):
    """`lg:A,B` -> ["A", "B"]."""
    names = [n.strip() for n in port[len(PREFIX):].split(",") if n.strip()]
    if not names:
        raise FarmError("%r names no place: write lg:PLACE (see `pumprig list --farm`)" % port)
    return names


# ------------------------------------------------------------------------------ labgrid-client

def client_exe():
    """labgrid-client: $PUMPRIG_LABGRID_CLIENT, next to this Python, else on PATH."""
    exe = os.environ.get("PUMPRIG_LABGRID_CLIENT")
    if exe:
        return exe
    cand = os.path.join(os.path.dirname(sys.executable), "labgrid-client")
    if os.path.exists(cand):
        return cand
    found = shutil.which("labgrid-client")
    if not found:
        raise FarmError("labgrid is not installed: pip install 'pumprig[farm]' (or set "
                        "PUMPRIG_LABGRID_CLIENT to a labgrid-client; docs/farm.md)")
    return found


def coordinator():
    return os.environ.get("LG_COORDINATOR") or "127.0.0.1:20408"


def identity():
    """This client as labgrid names it (the holder of the places it acquires): HOST/USER from
    LG_HOSTNAME and LG_USERNAME, else this host's name and the login name."""
    import getpass

    return "%s/%s" % (os.environ.get("LG_HOSTNAME") or socket.gethostname(),
                      os.environ.get("LG_USERNAME") or getpass.getuser())


def lg(args, place=None, token=None, timeout=LG_TIMEOUT_S):
    """Run one labgrid-client command; its stdout, or FarmError with labgrid's own words."""
    argv = [client_exe(), "-x", coordinator()]
    env = dict(os.environ)
    if token is not None:
        env["LG_TOKEN"] = token
        argv += ["-p", "+"]
    elif place is not None:
        argv += ["-p", place]
    try:
        r = subprocess.run(argv + list(args), capture_output=True, text=True, env=env,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise FarmError("cannot run %s (pip install 'pumprig[farm]')" % argv[0]) from None
    except subprocess.TimeoutExpired:
        raise FarmError("labgrid-client %s: no answer from the coordinator %s in %.0f s"
                        % (" ".join(args), coordinator(), timeout)) from None
    if r.returncode != 0:
        raise FarmError(_lg_error(r.stderr, args))
    return r.stdout


def _lg_error(stderr, args):
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    for x in reversed(lines):
        if "Error:" in x:
            return "labgrid: " + x.split("Error:", 1)[1].strip()
    if any("UNAVAILABLE" in x or "failed to connect" in x.lower() for x in lines):
        return ("cannot reach the labgrid coordinator at %s (set LG_COORDINATOR=HOST:PORT; "
                "docs/farm.md)" % coordinator())
    return "labgrid-client %s failed: %s" % (" ".join(args), (lines or ["no message"])[-1])


_HELD_BY = re.compile(r"already acquired by (\S+?)\.?(\s|$)")


def parse_show(text):
    """`labgrid-client show` -> {acquired, matches, resources: {name: {cls, params, ...}}}."""
    out = {"acquired": None, "matches": [], "resources": {}}
    lines = text.splitlines()
    i = 0
    section = None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"Acquired resource '([^']+)' \(([^)]*)\):", line)
        if m:
            block = []
            i += 1
            while i < len(lines) and lines[i].startswith(" "):
                block.append(lines[i])
                i += 1
            try:
                res = ast.literal_eval("\n".join(block).strip())
            except (ValueError, SyntaxError):
                res = {}
            if isinstance(res, dict):
                res["path"] = m.group(2)
                out["resources"][m.group(1)] = res
            continue
        s = line.strip()
        if s.startswith("acquired:"):
            v = s.split(":", 1)[1].strip()
            out["acquired"] = None if v in ("", "None") else v
            section = None
        elif s == "matches:":
            section = "matches"
        elif s.endswith(":") and line.startswith("  ") and not line.startswith("    "):
            section = None
        elif section == "matches" and line.startswith("    "):
            out["matches"].append(s)
        i += 1
    return out


def parse_places(text):
    """`labgrid-client -v places` -> [{name, matches, acquired, comment}] in its order."""
    places = []
    cur = None
    section = None
    for line in text.splitlines():
        m = re.match(r"Place '([^']+)':", line)
        if m:
            cur = {"name": m.group(1), "matches": [], "acquired": None, "comment": ""}
            places.append(cur)
            section = None
            continue
        if cur is None:
            continue
        s = line.strip()
        if line.startswith("    ") and section == "matches":
            cur["matches"].append(s)
        elif s == "matches:":
            section = "matches"
        elif s.startswith("acquired:"):
            v = s.split(":", 1)[1].strip()
            cur["acquired"] = None if v in ("", "None") else v
            section = None
        elif s.startswith("comment:"):
            cur["comment"] = s.split(":", 1)[1].strip()
            section = None
        elif s.endswith(":"):
            section = None
    return places


# ------------------------------------------------------------------------------ a held place

class Lease:
    """One acquired place and where its resources are. release() is idempotent."""

    def __init__(self, place, token=None):
        self.place = place
        self.token = token
        self.resources = {}
        self.held = False

    @property
    def port(self):
        return PREFIX + self.place

    def _serial_url(self, name):
        r = self.resources.get(name)
        if not r or r.get("cls") != "NetworkSerialPort":
            return None
        p = r.get("params") or {}
        return "rfc2217://%s:%s%s" % (p.get("host"), p.get("port"), RFC2217_OPTS)

    @property
    def url(self):
        """The rig's own serial port: the resource named `console`, else the only serial one."""
        url = self._serial_url("console")
        if url is None:
            serials = [n for n, r in self.resources.items() if r.get("cls") == "NetworkSerialPort"
                       and n != "balance"]
            url = self._serial_url(serials[0]) if len(serials) == 1 else None
        if url is None:
            raise FarmError("place %s has no serial port resource named 'console' (its "
                            "resources: %s): export the rig with `pumprig farm export`"
                            % (self.place, ", ".join(sorted(self.resources)) or "none"))
        return url

    @property
    def balance_url(self):
        return self._serial_url("balance")

    def service(self, name):
        """(host, port) of the place's NetworkService resource `name`, or None."""
        r = self.resources.get(name)
        if not r or r.get("cls") != "NetworkService":
            return None
        p = r.get("params") or {}
        return p.get("address"), int(p.get("port"))

    @property
    def control(self):
        """(host, port) of a virtual rig's control service, or None (a board)."""
        return self.service("control")

    @property
    def power_switch(self):
        """"port" (a power port), "output" (a relay's coil on a digital output) or None: how
        the place's `power` resource switches the board's supply."""
        r = self.resources.get(POWER)
        cls = r.get("cls") if r else None
        if cls in POWER_PORTS:
            return "port"
        if cls in DIGITAL_OUTPUTS:
            return "output"
        return None

    def power(self, action):
        """Switch the board's supply through labgrid-client: action on, off or get; returns
        True when powered. FarmError when the place has no power resource pumprig knows."""
        kind = self.power_switch
        if kind is None:
            r = self.resources.get(POWER)
            raise FarmError(
                "place %s has no power relay: %s (docs/farm.md, \"A bench's power relay\")"
                % (self.place, "its `power` resource is a %s, not a power port or digital "
                   "output labgrid switches" % r.get("cls") if r else "no resource named `power`"))
        if kind == "port":
            out = lg([POWER, action, "--name", POWER], place=self.place)
            if action == "get":
                return out.strip().endswith(" is on")
            return action == "on"
        level = {"on": "low", "off": "high", "get": "get"}[action]
        out = lg(["io", level, POWER], place=self.place)
        if action == "get":
            return out.strip().endswith(" is low")
        return action == "on"

    def refresh(self):
        info = parse_show(lg(["show"], place=self.place))
        self.resources = info["resources"]
        return self

    def release(self):
        if not self.held:
            return
        self.held = False
        lg(["release"], place=self.place)
        if self.token is not None:
            try:
                lg(["cancel-reservation", self.token])
            except FarmError:
                pass  # allocated reservations end with the release anyway

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def holder_of(place):
    """Who holds the place ("host/user"), or None."""
    return parse_show(lg(["show"], place=place))["acquired"]


def acquire(place, wait=False):
    """Acquire one place (a PlaceBusy when someone else holds it); with wait, queue a labgrid
    reservation for it and take it as soon as the coordinator allocates it."""
    if is_place(place):
        (place,) = place_names(place)
    lease = Lease(place)
    if wait:
        out = lg(["reserve", "--wait", "--shell", "name=%s" % place], timeout=24 * 3600)
        m = re.search(r"LG_TOKEN=(\S+)", out)
        if not m:
            raise FarmError("labgrid gave no reservation token for %s" % place)
        lease.token = m.group(1)
        try:
            lg(["acquire"], token=lease.token)
        except FarmError:
            _cancel(lease.token)
            raise
    else:
        try:
            lg(["acquire"], place=place)
        except FarmError as e:
            m = _HELD_BY.search(str(e))
            if m:
                raise PlaceBusy(place, m.group(1)) from None
            raise
    lease.held = True
    try:
        lease.refresh()
        lease.url  # noqa: B018 - fail now, while we still hold it, if there is no port
    except BaseException:
        lease.release()
        raise
    return lease


def _cancel(token):
    try:
        lg(["cancel-reservation", token])
    except FarmError:
        pass


def acquire_any(places, wait=False, prefer=0):
    """The first free place of `places`, trying them from index `prefer` on (one per pytest
    worker); PlaceBusy naming every holder when none is free."""
    order = places[prefer % len(places):] + places[:prefer % len(places)]
    busy = []
    for p in order:
        try:
            return acquire(p)
        except PlaceBusy as e:
            busy.append("%s (held by %s)" % (p, e.holder))
    if wait:
        return acquire(order[0], wait=True)
    raise FarmError("no free place among %s" % ", ".join(busy))


@contextmanager
def hold(port, wait=False):
    """Acquire the place for the block; released on the way out, whatever ends the block
    (an error, Ctrl-C, SIGTERM or SIGHUP, which are turned into KeyboardInterrupt)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, interrupt)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        lease = acquire(port, wait=wait)
        try:
            yield lease
        finally:
            lease.release()
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def open_port(port, wait=False):
    """The port resolver the client uses: (URL to open, lease or None). A plain port or URL
    passes through; `lg:PLACE` is acquired (the caller releases the lease)."""
    if not is_place(port):
        return port, None
    lease = acquire(port, wait=wait)
    return lease.url, lease


def list_places():
    """[{name, matches, acquired, comment}] of every place the coordinator knows."""
    return parse_places(lg(["-v", "places"]))


# ------------------------------------------------------------------------------ remote world

def remote_world(lease, timeout_s=10.0):
    """A WorldClient for the virtual rig on a held place, over its control service."""
    if lease.control is None:
        raise FarmError("place %s has no control service: it is not a virtual rig exported "
                        "with `pumprig farm export --relay`" % lease.place)
    return remote_service(lease, "control", timeout_s)


def remote_service(lease, name, timeout_s=10.0):
    """A client of the place's service `name` (a NetworkService: a virtual rig's `control`, a
    bench's `instruments`): JSON-lines requests over TCP, each signed with the rig's token from
    the key store (pumprig.farm_auth) and naming this client as the place's holder (the service
    obeys only the holder: pumprig.farm_holders). call(op, **args) returns the result or
    raises."""
    ctl = lease.service(name)
    if ctl is None:
        raise FarmError("place %s has no %s service" % (lease.place, name))
    from pumprig.farm_auth import Session
    from pumprig.virtual.control import WorldClient

    where = "the %s service of place %s at %s:%s" % (name, lease.place, ctl[0], ctl[1])
    holder = identity()

    class RemoteService(WorldClient):
        what = where

        def _connect(self):
            if self._sock is None:
                try:
                    s = socket.create_connection(ctl, timeout=self.timeout_s)
                except OSError as e:
                    raise FarmError("cannot reach %s: %s" % (where, e)) from e
                try:
                    self._sock = s
                    self.session = Session(self._readline(s), where)
                except (OSError, PumprigError) as e:
                    self.close()
                    if isinstance(e, FarmError):
                        raise
                    raise FarmError("%s sent no challenge: %s" % (where, e)) from e
            return self._sock

        def _encode(self, req):
            return self.session.wrap(dict(req, holder=holder))

        def _decode(self, line):
            return self.session.unwrap(line)

        def wipe_records(self):
            """Power cut, the board's records deleted (keys kept), power on."""
            return self.call("wipe_records", wait_s=60)

    return RemoteService(None, timeout_s=timeout_s)
