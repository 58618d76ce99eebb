"""Another git revision's tree, run side by side with this one (bench_simulate, bench_session).

A run for a tree must use that tree's code in every process it starts: the rig's launcher is
`python -m pumprig.virtual.launcher`, which otherwise imports the installed package (this
tree's world and shim) whatever tree the run is for.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def extract(rev, dest):
    """`git archive REV` of this repository, unpacked into dest."""
    data = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True,
                          check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=data, check=True)


def tree_env(root):
    """The environment that runs `root`'s tree: its host and board first on PYTHONPATH, for
    the run's interpreter and every process it starts (the rig's launcher included)."""
    path = [os.path.join(str(root), "host"), os.path.join(str(root), "board")]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def check_tree_env(root):
    """The launcher, the world and the shim a rig started under tree_env(root) comes from:
    raises unless each is `root`'s."""
    code = ("import os, pumprig.virtual.launcher as l, pumprig.virtual.world as w; "
            "print(l.__file__); print(w.__file__); "
            "print(os.path.join(os.path.dirname(w.__file__), 'shim', 'machine.py'))")
    out = subprocess.run([sys.executable, "-c", code], env=tree_env(root), cwd="/",
                         capture_output=True, text=True, timeout=60, check=True)
    paths = out.stdout.split()
    bad = [p for p in paths if not os.path.realpath(p).startswith(os.path.realpath(root))]
    if len(paths) != 3 or bad or not os.path.exists(paths[2]):
        raise RuntimeError("the rig for %s would run %s" % (root, out.stdout))
    return paths
