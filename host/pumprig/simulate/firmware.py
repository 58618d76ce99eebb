"""Installing the firmware sources into a throwaway virtual rig's filesystem (what a flash would
write). The one caller is `run.open_rig`; the virtual-rig opener (issue 16) replaces both."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import PumprigError

BOARD_DIR = Path(__file__).resolve().parents[3] / "board"
FIRMWARE_FILES = ("main.py", "bootcheck.py", "bootsafe.py", "pumpcore", "hw", "boards")


def board_dir() -> Path:
    """The firmware sources: the repository's board/ (or PUMPRIG_BOARD_DIR)."""
    d = Path(os.environ.get("PUMPRIG_BOARD_DIR", BOARD_DIR))
    if not (d / "main.py").exists():
        raise PumprigError(f"firmware sources not found at {d}: set PUMPRIG_BOARD_DIR")
    return d


def install_firmware(fs: str | Path, src: Path | None = None) -> int:
    """Copy the firmware into a virtual rig's filesystem directly (what a flash would write).

    Used for throwaway rigs; `pumprig flash` is the user-facing path. Writes the manifest the
    boot check verifies (pumprig.flash.write_manifest). Returns files copied."""
    src = src or board_dir()
    fs = Path(fs)
    n = 0
    for name in FIRMWARE_FILES:
        s = src / name
        if s.is_dir():
            for f in s.rglob("*"):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".json"):
                    d = fs / f.relative_to(src)
                    d.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, d)
                    n += 1
        elif s.exists():
            shutil.copyfile(s, fs / name)
            n += 1
    from ..flash import write_manifest

    write_manifest(fs)
    return n
