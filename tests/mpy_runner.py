"""Run board tests under MicroPython (the unix port), or any Python.

    .venv/bin/micropython -X heapsize=384k tests/mpy_runner.py tests/board [-k substring] [-v]

Imports every test_*.py of the directory (sorted), calls every test_* function in it (sorted),
prints one line per failure and ends with `N passed, M failed` (`, K skipped` when some raised
SkipTest). Exit status 1 if any failed. board/ and the test directory go on sys.path, found
from this file's location, so it runs from any working directory.
"""

import gc
import os
import sys


def _abs(p):
    if p.startswith("/"):
        return p
    cwd = os.getcwd()
    return cwd.rstrip("/") + "/" + p


def _dirname(p):
    i = p.rfind("/")
    if i < 0:
        return "."
    return p[:i] if i else "/"


def _isdir(p):
    try:
        return (os.stat(p)[0] & 0o170000) == 0o040000
    except OSError:
        return False


def _norm(p):
    out = []
    for part in p.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def _one_line(e):
    msg = str(e).replace("\n", " | ")
    return "%s: %s" % (type(e).__name__, msg) if msg else type(e).__name__


def _traceback(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def main(argv):
    here = _dirname(_norm(_abs(__file__)))  # tests/
    root = _dirname(here)  # the repository
    test_dir = None
    pattern = None
    verbose = False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-k":
            i += 1
            if i >= len(argv):
                print("mpy_runner: -k needs a substring")
                return 2
            pattern = argv[i]
        elif a.startswith("-k") and len(a) > 2:
            pattern = a[2:]
        elif a == "-v":
            verbose = True
        elif a.startswith("-"):
            print("mpy_runner: unknown option %s" % a)
            return 2
        else:
            test_dir = a
        i += 1
    if test_dir is None:
        test_dir = here + "/board"
    elif not _isdir(test_dir) and not test_dir.startswith("/") and _isdir(root + "/" + test_dir):
        test_dir = root + "/" + test_dir
    if not _isdir(test_dir):
        print("mpy_runner: no such directory %s" % test_dir)
        return 2
    test_dir = _norm(_abs(test_dir))

    for p in (test_dir, root + "/board"):
        if p not in sys.path:
            sys.path.insert(0, p)

    passed = failed = skipped = 0
    for fname in sorted(os.listdir(test_dir)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        modname = fname[:-3]
        try:
            mod = __import__(modname)
        except Exception as e:  # a module that does not import is one failure
            failed += 1
            print("FAIL %s (import): %s" % (modname, _one_line(e)))
            if verbose:
                _traceback(e)
            continue
        names = sorted(n for n in dir(mod) if n.startswith("test_"))
        for n in names:
            fn = getattr(mod, n)
            if not callable(fn):
                continue
            full = modname + "." + n
            if pattern is not None and pattern not in full:
                continue
            try:
                fn()
            except Exception as e:
                cls = type(e).__name__
                if cls == "SkipTest" or cls == "Skipped":
                    skipped += 1
                    if verbose:
                        print("SKIP %s: %s" % (full, e))
                    continue
                failed += 1
                print("FAIL %s: %s" % (full, _one_line(e)))
                if verbose:
                    _traceback(e)
                continue
            passed += 1
            if verbose:
                print("ok   %s" % full)
        del mod
        if modname in sys.modules:
            del sys.modules[modname]
        gc.collect()

    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
