# Integrity at boot: main.py runs check() before it imports anything of the firmware, then
# drops this module. Every file the manifest of `pumprig flash` lists must have its size and
# SHA-256, and no unlisted .py may sit beside a listed .mpy (the import would take it). Kept
# as source, never .mpy (a torn .mpy makes its import spin forever; a torn source is a
# SyntaxError), and lean: what a module leaves in the heap for good are the names it interns,
# and the flashed firmware runs in 128 KB (tests/host/test_memory_rig.py). On a mismatch
# main.py runs the FIRMWARE safe state (bootsafe.py) instead of the firmware.


def check():
    """[] when the firmware is intact, else the paths that fail (the manifest's own when it is
    missing or unreadable)."""
    import hashlib
    import os
    from binascii import hexlify

    try:
        with open(".pumprig-manifest.json") as f:
            import json

            d = json.load(f)["files"]
        d.items()
    except Exception:  # missing, torn or not ours
        return [".pumprig-manifest.json"]
    bad = []
    buf = bytearray(256)
    mv = memoryview(buf)
    for p in d:
        try:
            n, h = d[p]
            if os.stat(p)[6] != n:
                raise ValueError
            s = hashlib.sha256()
            with open(p, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    s.update(mv[:n])
            if hexlify(s.digest()).decode() != h:
                raise ValueError
        except Exception:
            bad.append(p)
        if p.endswith(".mpy") and p[:-3] + "py" not in d:
            try:  # a source beside it would be imported instead: not what was flashed
                os.stat(p[:-3] + "py")
                bad.append(p[:-3] + "py")
            except OSError:
                pass
    return bad
