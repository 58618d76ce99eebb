"""A virtual rig as a context manager: the launcher in a subprocess, ready in well under 1 s.

    with open_rig(warp=True) as rig:            # the firmware installed as `pumprig flash` does
        client = rig.connect()                  # hello and login, retried while it boots
        rig.link, rig.balance_link, rig.world.measure()

    with VirtualRig(blank=True) as rig:         # a bare MicroPython board (mpremote, flash)
        ...

open_rig() is the one way the host's tools (simulate, bench, the HIL fixture, bench/ scripts
and the tests) open a rig that runs the firmware: the .mpy set from pumprig.virtual.firmware is
written into the board filesystem before the interpreter powers on, so nothing has to reset it
afterwards, and rig.connect() owns the connect-and-retry policy (pumprig.virtual.link).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from pumprig.errors import SimError
from pumprig.virtual.control import WorldClient


class VirtualRig:
    def __init__(self, state=None, blank=False, warp=False, heap="384k", name=None,
                 link=None, start_timeout_s=10.0, firmware=False, home=None, board_dir=None,
                 compile_mpy=True):
        self._tmp = tempfile.mkdtemp(prefix="pumprig-rig-")
        self._own_state = state is None
        self.state = os.path.abspath(state) if state else os.path.join(self._tmp, "state")
        self.name = name or "vrig-%d-%s" % (os.getpid(), os.path.basename(self._tmp)[-6:])
        self.link = os.path.abspath(link) if link else os.path.join(self._tmp, self.name)
        self.balance_link = self.link + "-balance"
        self.control = os.path.join(self.state, "control.sock")
        self.blank = blank
        self.warp = warp
        self.heap = heap
        self.start_timeout_s = start_timeout_s
        self.proc = None
        self.world = None
        self.firmware = firmware    # install the firmware (pumprig.virtual.firmware) at start
        self.home = os.path.abspath(home) if home else None  # PUMPRIG_HOME: keys, registry
        self.board_dir = board_dir      # firmware sources (default: pumprig.virtual.firmware's)
        self.compile_mpy = compile_mpy  # False: the .py sources (a benchmark's comparison)

    @property
    def fs(self):
        return os.path.join(self.state, "fs")

    def start(self):
        from pumprig.virtual.supervisor import parse_heap

        # --owned: the launcher stops when our end of its stdin closes, so a rig never
        # outlives its owner (a SIGTERM or a crash of this process included)
        argv = [sys.executable, "-m", "pumprig.virtual.launcher", "--link", self.link,
                "--state", self.state, "--heap", parse_heap(self.heap), "--owned"]
        blank = self.blank
        if self.firmware:
            from pumprig.virtual import firmware
            from pumprig.virtual.supervisor import find_micropython

            if blank:
                shutil.rmtree(self.fs, ignore_errors=True)
                blank = False
            firmware.install(self.fs, find_micropython(), src=self.board_dir,
                             compile_mpy=self.compile_mpy)
        if blank:
            argv.append("--blank")
        if self.warp:
            argv.append("--warp")
        for p in (self.link, self.control):
            if os.path.lexists(p):
                os.unlink(p)
        os.makedirs(self.state, exist_ok=True)
        self._log = open(os.path.join(self._tmp, "launcher.log"), "w+b")
        env = None
        if self.home:
            env = dict(os.environ, PUMPRIG_HOME=self.home)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + self.start_timeout_s
        while True:
            if os.path.lexists(self.link) and os.path.exists(self.control):
                try:
                    self.world = WorldClient(self.control)
                    self.world.status()
                    break
                except SimError:
                    self.world = None
            if self.proc.poll() is not None:
                raise SimError("the virtual rig exited at start: %s" % self._logtext())
            if time.monotonic() > end:
                self.stop()
                raise SimError("the virtual rig did not come up in %.0f s" % self.start_timeout_s)
            time.sleep(0.005)
        return self

    def connect(self, role="clinician", timeout=2.0, wait_s=10.0, cls=None):
        """An open client on this rig (hello and login done), retried while the firmware
        boots; the keys come from the rig's home. See pumprig.virtual.link."""
        from pumprig.virtual import link

        return link.connect(self.link, role=role, home=self.home, timeout=timeout,
                            wait_s=wait_s, cls=cls or link.VirtualClient)

    def wipe_records(self):
        """Power cut, the board's records deleted (keys kept), power on."""
        wipe_records(self.world, self.fs)

    def _logtext(self):
        try:
            self._log.seek(0)
            return self._log.read().decode(errors="replace").strip()[-2000:]
        except (OSError, ValueError):
            return ""

    def stop(self):
        if self.world is not None:
            self.world.close()
            self.world = None
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        if self.proc is not None:
            return self     # open_rig() started it already
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wipe_records(world, fs):
    """Pristine records on a virtual rig, keys kept: power cut through `world` (a WorldClient),
    everything in the board's data/ but keys.json deleted, power on. What a HIL `fresh_rig`
    does, locally or on the exporter host of a farm."""
    world.power_cut()
    data = os.path.join(fs, "data")
    for name in os.listdir(data):
        if name != "keys.json":
            p = os.path.join(data, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
    world.power_on()


def open_rig(state=None, blank=True, warp=False, heap="384k", name=None, link=None, home=None,
             start_timeout_s=10.0, board_dir=None, compile_mpy=True):
    """A started virtual rig running the firmware as `pumprig flash` installs it (use it as a
    context manager, or call stop()). blank: a fresh board filesystem (keys and records new);
    otherwise the firmware is replaced and data/ kept. board_dir: other firmware sources;
    compile_mpy=False: the .py sources, for a benchmark that compares the two."""
    rig = VirtualRig(state=state, blank=blank, warp=warp, heap=heap, name=name, link=link,
                     start_timeout_s=start_timeout_s, firmware=True, home=home,
                     board_dir=board_dir, compile_mpy=compile_mpy)
    try:
        return rig.start()
    except BaseException:
        rig.stop()          # its temporary folder and any launcher it started
        raise
