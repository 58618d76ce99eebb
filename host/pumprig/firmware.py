"""Where the files that ship with pumprig are: the firmware (board/) and the example plans.

One place answers for `pumprig flash`, the plan checks (board/boards/*.json), `simulate` and the
virtual rig. In a checkout (host/pumprig/ beside board/ and pyproject.toml) they are the
checkout's own board/ and examples/, so an edit there is what gets flashed; in an installed
package they are the copies the wheel carries (pumprig/_board, pumprig/_examples).

PUMPRIG_BOARD_DIR, when set, names another firmware tree to use (a firmware developer's work in
progress); it must hold main.py like board/ does.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import PumprigError

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parents[1]            # host/pumprig -> the repository, when run from a checkout


def _in_checkout() -> bool:
    return (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "board" / "main.py").is_file()


def board_dir() -> Path:
    """The firmware sources to flash or install: PUMPRIG_BOARD_DIR, else the checkout's board/,
    else the copy packaged with pumprig. Raises PumprigError when none holds main.py."""
    env = os.environ.get("PUMPRIG_BOARD_DIR")
    if env:
        d = Path(env)
        where = "PUMPRIG_BOARD_DIR"
    elif _in_checkout():
        return _CHECKOUT / "board"
    else:
        d = _HERE / "_board"
        where = "the installed package"
    if not (d / "main.py").is_file():
        raise PumprigError(f"firmware sources not found at {d} ({where}): no main.py there")
    return d


def board_config_path(name: str) -> Path:
    """board/boards/NAME.json of the firmware in use (may not exist: the caller says so)."""
    return board_dir() / "boards" / f"{name}.json"


def examples_dir() -> Path:
    """The example plans (examples/ in a checkout, the packaged copy otherwise)."""
    if _in_checkout():
        return _CHECKOUT / "examples"
    return _HERE / "_examples"
