# Power-on of the virtual board, imported by the launcher's `micropython -i -c` in the shim's
# directory: put the shim's silicon in place, make the board filesystem the root, run boot.py
# and main.py as a board does (in __main__, the REPL's namespace), then fall through to the
# REPL. The firmware runs inside this import: what it keeps in the heap is kept small.
import gc
import os
import sys

import _world
import machine  # the shim, loaded before the board fs becomes the root

import __main__

os.umount("/")
os.mount(os.VfsPosix(os.getenv("PUMPRIG_FS")), "/")
os.chdir("/")
# Relative entries: the unix port reads modules through POSIX paths relative to the cwd.
sys.path[:] = ["", ".frozen", "./lib"]

for f in ("boot.py", "main.py"):
    if f == "main.py" and os.getenv("PUMPRIG_MODE") == "raw":
        break                       # mpremote's soft reset: back to the raw REPL, no main.py
    try:
        os.stat(f)
    except OSError:
        continue
    on = True  # Ctrl-C interrupts, as on a board
    if f == "main.py":
        # a main.py that turns Ctrl-C into data on its first lines (micropython.kbd_intr(-1),
        # which on the unix port would make 0x03 kill the process: the firmware skips it here)
        # gets it off before it runs; the firmware turns it on while therapy is stopped
        with open(f, "rb") as h:
            on = b"kbd_intr(-1)" not in h.read(8192)
        gc.collect()
    _world.kbd_intr(on)
    try:
        execfile(f, __main__.__dict__)  # noqa: F821  (MicroPython's; reads the file as it parses)
    except SystemExit:
        raise
    except BaseException as e:      # KeyboardInterrupt and errors go to the REPL, as on a board
        sys.print_exception(e)
        break

os.umount("/")                  # at the REPL: the filesystem lists sizes (shim/_fs.py)
os.mount(machine.Fs(os.getenv("PUMPRIG_FS")), "/")
try:
    # the firmware's serial reads (hw/sim.py) set the terminal to return at once (VMIN 0);
    # the REPL would take that for the end of its input and exit. Set back after a round
    # trip, so that no kbd_intr of the firmware's is still being applied by the world (its
    # read-modify-write of the attributes would undo this).
    import termios

    if not termios.tcgetattr(0)[6][6]:
        _world.epoch_s()
        a = termios.tcgetattr(0)
        a[6][6] = 1
        termios.tcsetattr(0, termios.TCSANOW, a)
        del a
    del termios
except Exception:  # noqa: S110  (no world, no terminal: nothing to set back)
    pass
_world.kbd_intr(True)           # the REPL takes Ctrl-C, as a board's does
# a round trip: the world has applied that before the REPL starts. The world sets ISIG by a
# read-modify-write of the terminal's attributes; overlapping the REPL's own switch to raw mode
# it would put ISIG back on inside the line editor, where a Ctrl-C (mpremote's first byte)
# makes the interpreter exit, and the rig then soft-resets into main.py
_world.epoch_s()
_world._frozen = False
_world.send("Q\n")              # at the REPL: no firmware loop waits on the world
del sys.modules["_power"]       # the REPL's heap keeps nothing of the power-on
