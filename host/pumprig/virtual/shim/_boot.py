# Power-on of the virtual board: put the shim's silicon in place, make the board filesystem
# the root, run boot.py and main.py as a board does, then fall through to the REPL.
import os
import sys

import _world
import machine  # noqa: F401  (the shim, loaded before the board fs becomes the root)

os.umount("/")
os.mount(os.VfsPosix(os.getenv("PUMPRIG_FS")), "/")
os.chdir("/")
# Relative entries: the unix port reads modules through POSIX paths relative to the cwd.
sys.path[:] = ["", ".frozen", "./lib"]


def _pumprig_run(name):
    try:
        os.stat(name)
    except OSError:
        return True
    try:
        with open(name) as f:
            src = f.read()
        exec(compile(src, name, "exec"), globals())
    except SystemExit:
        raise
    except BaseException as e:      # KeyboardInterrupt and errors go to the REPL, as on a board
        sys.print_exception(e)
        return False
    return True


if _pumprig_run("boot.py") and _world.mode != "raw":
    _pumprig_run("main.py")
_world.repl()
del _pumprig_run
