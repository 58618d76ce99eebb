"""A virtual rig as a context manager: the launcher in a subprocess, ready in well under 1 s.

    with VirtualRig(blank=True, warp=True) as rig:
        rig.link, rig.balance_link, rig.world.measure()
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
                 link=None, start_timeout_s=10.0):
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

    @property
    def fs(self):
        return os.path.join(self.state, "fs")

    def start(self):
        argv = [sys.executable, "-m", "pumprig.virtual.launcher", "--link", self.link,
                "--state", self.state, "--heap", self.heap]
        if self.blank:
            argv.append("--blank")
        if self.warp:
            argv.append("--warp")
        for p in (self.link, self.control):
            if os.path.lexists(p):
                os.unlink(p)
        os.makedirs(self.state, exist_ok=True)
        self._log = open(os.path.join(self._tmp, "launcher.log"), "w+b")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
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
        return self.start()

    def __exit__(self, *exc):
        self.stop()
