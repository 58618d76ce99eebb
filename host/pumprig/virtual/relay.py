"""The pty relay of a virtual rig: the host's serial port (an outer pty, its slave linked at
--link like /dev/ttyACM0) and the interpreter's console (an inner pty), with the bytes between.

Host-bound bytes are kept (the newest OUT_LIMIT) while nobody reads the port. Ctrl bytes from
the host are noted for the supervisor: 0x01/0x02 (raw or friendly REPL asked) and 0x04 (a soft
reset the host asked for). Closes of the port by any host program are seen through inotify
(CloseWatch). Standard library only.
"""

import errno
import fcntl
import os
import termios
import time
import tty

from pumprig.errors import SimError

OUT_LIMIT = 65536       # host-bound bytes kept while nobody reads the port; older ones drop


def make_raw(fd, isig=False):
    tty.setraw(fd)
    if isig:
        a = termios.tcgetattr(fd)
        a[3] |= termios.ISIG
        termios.tcsetattr(fd, termios.TCSANOW, a)


def set_nonblocking(fd):
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)


def check_link(path):
    """SimError unless a serial port link can be made at path: its folder exists, and nothing
    but a symlink (a stale port of an earlier rig) is there to replace."""
    folder = os.path.dirname(os.path.abspath(path)) or "/"
    if not os.path.isdir(folder):
        raise SimError("cannot make the port link %s: no folder %s" % (path, folder))
    if os.path.lexists(path) and not os.path.islink(path):
        raise SimError("%s exists and is not a port link: give another --link (it is not "
                       "replaced)" % path)


def make_link(target, path):
    """The symlink path -> target (a pty's slave); an earlier symlink there is replaced,
    anything else is refused (check_link)."""
    check_link(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        os.symlink(target, path)
    except OSError as e:
        raise SimError("cannot make the port link %s: %s" % (path, os.strerror(e.errno or
                                                                             errno.EIO))) from None


def drop_link(path, target):
    """Remove the link at path if it is still ours (a symlink to target)."""
    try:
        if os.path.islink(path) and os.readlink(path) == target:
            os.unlink(path)
    except OSError:
        pass


class CloseWatch:
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


class Relay:
    """Bytes between the host's port (outer, the pty master) and the interpreter's console
    (inner, set by the supervisor while an interpreter runs)."""

    def __init__(self, outer):
        self.outer = outer
        self.inner = None
        self.to_host = bytearray()
        self.to_inner = bytearray()
        self.last_ctrl = 0          # the last 0x01/0x02 from the host
        self.ctrl_d_at = 0.0        # when the host last sent 0x04

    @property
    def pending(self):
        return bool(self.to_host or self.to_inner)

    def host(self, data):
        """Bytes for the host's port."""
        self.to_host += data
        if len(self.to_host) > OUT_LIMIT:
            del self.to_host[:-OUT_LIMIT]
        self.flush_host()

    def to_board(self, data):
        """Bytes for the interpreter's console."""
        self.to_inner += data
        self.flush_inner()

    def flush_host(self):
        while self.to_host:
            try:
                n = os.write(self.outer, self.to_host)
            except BlockingIOError:
                break
            except OSError:
                self.to_host.clear()
                break
            del self.to_host[:n]

    def flush_inner(self):
        while self.to_inner and self.inner is not None:
            try:
                n = os.write(self.inner, self.to_inner)
            except BlockingIOError:
                break
            except OSError:
                break
            del self.to_inner[:n]

    def read_host(self):
        """What the host wrote (b"" if nothing), its ctrl bytes noted."""
        try:
            data = os.read(self.outer, 65536)
        except (BlockingIOError, OSError):
            return b""
        for b in data:
            if b in (0x01, 0x02):
                self.last_ctrl = b
            elif b == 0x04:
                self.ctrl_d_at = time.monotonic()  # a soft reset the host asked for
        return data

    def read_board(self):
        """What the interpreter wrote; None if nothing yet, b"" when it has exited."""
        try:
            return os.read(self.inner, 65536)
        except BlockingIOError:
            return None
        except OSError:
            return b""
