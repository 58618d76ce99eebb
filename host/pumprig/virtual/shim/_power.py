# Power-on of the virtual board, imported by the launcher's `micropython -i -c` in the shim's
# directory: put the shim's silicon in place, make the board filesystem the root, run boot.py
# and main.py as a board does (in __main__, the REPL's namespace), then fall through to the
# REPL (shim/_repl.py). The firmware runs inside this import, so this module's code stays in
# the heap as long as it does: what comes after main.py is in _repl.py, imported then.
import gc
import os
import sys

import _world
import machine  # noqa: F401  (the shim, loaded before the board fs becomes the root)

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

os.umount("/")
os.mount(os.VfsPosix(os.getenv("PUMPRIG_SHIM")), "/")   # the shim's directory, for _repl
os.chdir("/")                   # a new mount: relative paths resolve after a chdir
import _repl  # noqa: E402,F401  (the REPL's setup; it mounts the board fs back)
