"""A throw-away PUMPRIG_HOME (keys, rig state) for one benchmark or campaign run."""

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def temp_home(prefix):
    """PUMPRIG_HOME set to a new folder for the block (yielded); the previous value and the
    folder's absence restored after it, also on errors."""
    home = tempfile.mkdtemp(prefix=prefix)
    old = os.environ.get("PUMPRIG_HOME")
    os.environ["PUMPRIG_HOME"] = home
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("PUMPRIG_HOME", None)
        else:
            os.environ["PUMPRIG_HOME"] = old
        shutil.rmtree(home, ignore_errors=True)
