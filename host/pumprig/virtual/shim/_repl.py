# The end of the virtual board's power-on (shim/_power.py), once boot.py and main.py have left:
# imported with the shim's directory as the root, it mounts the board filesystem back as the
# REPL sees it (listing sizes, shim/_fs.py), gives the terminal back to the REPL, tells the
# world, and leaves nothing of the power-on in the heap.
import os
import sys

import _world
from _fs import Fs

os.umount("/")
os.mount(Fs(os.getenv("PUMPRIG_FS")), "/")
os.chdir("/")
del Fs
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
_world._frozen = False
_world.now_ms()                 # not frozen: asked of the world
_world.send("Q\n")              # at the REPL: no firmware loop waits on the world
for m in ("_power", "_repl", "_fs"):
    sys.modules.pop(m, None)    # the REPL's heap keeps nothing of the power-on
