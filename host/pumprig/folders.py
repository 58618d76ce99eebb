"""Folders the CLI writes into (`demo --out`, `bench --out`, `calibrate --out`, `sim --state`),
checked before the work starts: a typo costs no run, and a typo in the parent is a mistake to
report, not a tree to create."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import PumprigError


def check_folder(path, option: str) -> Path:
    """`path` as a Path if it is a folder, or can be made as one inside a folder that exists
    and can be written; else PumprigError naming `option` (e.g. "--out")."""
    out = Path(path)
    parent = out.parent
    if out.exists():
        if not out.is_dir():
            raise PumprigError(f"{option} {path}: is a file, not a folder")
        where = out
    elif parent.exists() and not parent.is_dir():
        raise PumprigError(f"{option} {path}: {parent} is a file, not a folder")
    elif not parent.is_dir():
        raise PumprigError(f"{option} {path}: no folder {parent} (create it first, or give "
                           f"another {option})")
    else:
        where = parent
    if not os.access(where, os.W_OK | os.X_OK):
        raise PumprigError(f"{option} {path}: cannot write in {where} (permission denied)")
    return out


def make_folder(path, option: str) -> Path:
    """check_folder, then create the folder (one level) if it is not there."""
    out = check_folder(path, option)
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise PumprigError(f"{option} {path}: cannot create it ({e.strerror})") from None
    return out
