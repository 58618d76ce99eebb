"""Launcher of a virtual rig: the MicroPython unix port on a pty, with the world around it.

    python -m pumprig.virtual.launcher --link PATH --state DIR [--blank] [--heap 384k] [--warp]

The link PATH is a symlink to the slave of an outer pty, opened by pyserial and mpremote like
/dev/ttyACM0. The interpreter runs on an inner pty (own session, controlling tty; ISIG, so that a
0x03 byte raises KeyboardInterrupt, is turned on and off by the board through the world: on for
boot.py and the REPL, off for main.py until the firmware allows Ctrl-C). Standard library only.

The parts: the pty relay (relay.py), the supervisor that runs and restarts the interpreter
(supervisor.py), the control server (control.py, beside its client) and the world (world.py).
Rig ties them together in one select loop. With --owned the launcher stops when its standard
input closes: the process that started it (pumprig.virtual.rig) has gone, however it ended.
"""

import argparse
import errno
import faulthandler
import json
import os
import pty
import selectors
import signal
import sys

from pumprig.firmware import board_config_path
from pumprig.virtual.control import ControlServer
from pumprig.virtual.relay import (
    CloseWatch,
    Relay,
    check_link,
    drop_link,
    make_link,
    make_raw,
    set_nonblocking,
)
from pumprig.virtual.supervisor import (
    Supervisor,
    find_micropython,
    parse_heap,
    prepare_state,
    pumprig_home,
    shim_dir,
)
from pumprig.virtual.world import World, load_config

HERE = os.path.dirname(os.path.abspath(__file__))


class Stop(Exception):
    """Raised by Rig.stop (a signal handler) to leave the select loop."""


class Rig:
    def __init__(self, link, state, heap="384k", warp=False, blank=False, config=None,
                 owned=False):
        self.link = os.path.abspath(link)
        self.state = os.path.abspath(state)
        self.heap = parse_heap(heap)
        self.name = os.path.basename(self.link)
        self.fs = os.path.join(self.state, "fs")
        self.control_path = os.path.join(self.state, "control.sock")
        self.balance_link = self.link + "-balance"
        # what can fail is checked before anything is written (keys, state dir, links)
        check_link(self.link)
        check_link(self.balance_link)
        micropython = find_micropython()
        self.uid = prepare_state(self.state, blank)
        config = config or str(board_config_path("sim"))
        self.world = World(load_config(config), rig=self, warp=warp,
                           balance_seed=int(self.uid, 16) & 0xFFFFFFFF)
        self.sel = selectors.DefaultSelector()
        self.running = True
        self.down = False
        self.registry = os.path.join(pumprig_home(), "rigs", self.name + ".json")

        # outer pty: the host's serial port
        self.outer, self.outer_slave = pty.openpty()
        make_raw(self.outer_slave)
        set_nonblocking(self.outer)
        self.port_tty = os.ttyname(self.outer_slave)
        make_link(self.port_tty, self.link)
        self.relay = Relay(self.outer)
        self.sel.register(self.outer, selectors.EVENT_READ, "outer")
        # every close of the port by a host program, queued by the kernel (inotify), so a
        # close followed at once by another program's open is never missed: the board ends
        # the session (link_drops)
        self.closes = CloseWatch(self.port_tty)
        if self.closes.fd is not None:
            self.sel.register(self.closes.fd, selectors.EVENT_READ, "closes")
        # the balance's port
        self.bal, self.bal_slave = pty.openpty()
        make_raw(self.bal_slave)
        set_nonblocking(self.bal)
        self.bal_tty = os.ttyname(self.bal_slave)
        make_link(self.bal_tty, self.balance_link)
        self.bal_buf = b""
        self.sel.register(self.bal, selectors.EVENT_READ, "balance")
        self.server = ControlServer(self.control_path, self.sel, self)
        self.supervisor = Supervisor(micropython, shim_dir(micropython, self.state), self.fs,
                                     self.uid, self.heap, self.world, self.sel, self.relay,
                                     self.state)
        if owned:
            self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "owner")

    # ---- what the world and the control server ask of the rig ----------------------------
    @property
    def pid(self):
        return self.supervisor.pid

    def restart(self, mode, cause):
        self.supervisor.restart(mode, cause)

    def power_cut(self, cause="power"):
        self.supervisor.power_cut(cause)

    def power_on(self):
        self.supervisor.power_on()

    def external_reset(self, cause="external"):
        """An external hard reset (the RUN pin)."""
        self.supervisor.quick_exits = 0
        self.supervisor.restart("power", cause)

    def set_isig(self, on):
        self.supervisor.set_isig(on)

    def board_eof(self):
        self.supervisor.board_eof()

    def status_info(self):
        return {"link": self.link, "balance": self.balance_link, "uid": self.uid,
                "pid": self.pid, "state_dir": self.state, "powered": self.pid is not None}

    # ---- registry ------------------------------------------------------------------------
    def register(self):
        info = {"link": self.link, "state": self.state, "control": self.control_path,
                "balance": self.balance_link, "pid": os.getpid(), "uid": self.uid}
        os.makedirs(os.path.dirname(self.registry), exist_ok=True)
        tmp = self.registry + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, self.registry)

    # ---- relay ---------------------------------------------------------------------------
    def _on_closes(self):
        """A host program closed the port since we last looked: tell the board (in the
        time answers it gets from the world)."""
        if self.closes.take():
            self.world.link_dropped()

    def _on_outer(self):
        data = self.relay.read_host()
        if not data:
            return
        self._on_closes()   # a close before these bytes counts before they reach the board
        if 0x03 in data:
            # the world's answer goes out before a Ctrl-C can interrupt the firmware
            self.world.serial_from_host()
            self.relay.to_board(data)
        else:
            # the bytes first, then the wake-up: the firmware finds them when it looks
            self.relay.to_board(data)
            self.world.serial_from_host()

    def _on_inner(self):
        data = self.relay.read_board()
        if data is None:
            return
        if not data:
            self.supervisor.exited()
            return
        self.supervisor.output(data)

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

    def _on_owner(self):
        """The owner's pipe (--owned): its end closed, the owner has gone; stop."""
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.running = False

    # ---- main loop -----------------------------------------------------------------------
    def run(self):
        sup = self.supervisor
        sup.start("power")
        self.register()
        try:
            while self.running:
                timeout = self.world.next_timeout_s()
                if self.relay.pending:
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
                        if sup.inner is not None and key.fd == sup.inner:
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
                        self.server.accept()
                    elif what == "client":
                        self.server.on_client(key.fileobj)
                    elif what == "owner":
                        self._on_owner()
                self.relay.flush_inner()
                self.relay.flush_host()
                self.world.tick()
        finally:
            self.shutdown()

    def stop(self, *_):
        self.running = False
        if not self.down:   # a SIGTERM during shutdown (the owner closes stdin, then signals)
            raise Stop()    # must not cut it short: the registry entry would stay behind

    def shutdown(self):
        """Stop the interpreter, remove the links, the socket and the registry entry (once)."""
        if self.down:
            return
        self.down = True
        self.supervisor.kill()
        drop_link(self.link, self.port_tty)
        drop_link(self.balance_link, self.bal_tty)
        try:
            os.unlink(self.registry)
        except OSError:
            pass
        self.server.close()
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
    ap.add_argument("--owned", action="store_true",
                    help="stop when standard input closes (the starting process has gone)")
    args = ap.parse_args(argv)
    from pumprig.errors import PumprigError

    try:
        rig = Rig(args.link, args.state, heap=args.heap, warp=args.warp, blank=args.blank,
                  config=args.config, owned=args.owned)
    except PumprigError as e:
        sys.stderr.write("pumprig: %s\n" % e)
        return 1
    signal.signal(signal.SIGINT, rig.stop)
    signal.signal(signal.SIGTERM, rig.stop)
    signal.signal(signal.SIGHUP, rig.stop)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where the rig is stuck
    try:
        rig.run()
    except Stop:
        pass
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:
        if e.errno == errno.EIO:
            sys.exit(1)
        raise
