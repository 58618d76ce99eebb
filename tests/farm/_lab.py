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
import time
from pathlib import Path

BIN = Path(sys.executable).parent
PLACES = ("place-a", "place-b")


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


class Farm:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.coord = "127.0.0.1:%d" % _free_port()
        self.keys = tmp / "shared" / "keys.json"   # a lab would mount this on every host

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


def _start_host(farm, name, nodelay=False):
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
    relay = farm.spawn([str(BIN / "pumprig"), "farm", "export", "--no-boards", "--address",
                        "127.0.0.1", "--control-port", str(port), "--relay", "--out", str(yaml)]
                       + extra, env, name + "-relay.log")
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
        f.hosts = {}
        for name in ("hostA", "hostB"):
            f.hosts[name] = _start_host(f, name, nodelay=name in nodelay)
        for name, place in zip(("hostA", "hostB"), PLACES, strict=True):
            f.lg("-p", place, "create")
            f.lg("-p", place, "add-match", "%s/%s/*" % (name, f.hosts[name]["rig"]))
        procs = [f.coordinator] + [h["exporter"] for h in f.hosts.values()]
        wait_for(lambda: all("%s/%s/NetworkService" % (n, h["rig"]) in f.lg("resources").stdout
                             for n, h in f.hosts.items()), "both exporters' resources",
                 procs=procs)
    except BaseException:
        f.stop()
        raise
    return f
