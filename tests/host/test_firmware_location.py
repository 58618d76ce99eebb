"""Where the firmware comes from (pumprig.firmware), what the wheel carries, and that a command
failing for want of it leaves no rig process behind (issue 14, Install)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pumprig import firmware
from pumprig.errors import PumprigError

ROOT = Path(__file__).resolve().parents[2]


def test_checkout_uses_its_own_board_dir(monkeypatch):
    """In a checkout, flash, plans and simulate all read the checkout's board/ (one helper)."""
    monkeypatch.delenv("PUMPRIG_BOARD_DIR", raising=False)
    assert firmware.board_dir() == ROOT / "board"
    assert firmware.examples_dir() == ROOT / "examples"
    from pumprig import plans, simulate

    assert simulate.board_dir is firmware.board_dir
    assert plans.board_limits("sim")["step_pl"] > 0
    assert not hasattr(simulate, "BOARD_DIR")
    import pumprig.flash as fl

    assert not hasattr(fl, "BOARD_DIR")


def test_installed_copy_is_used_outside_a_checkout(monkeypatch, tmp_path):
    """Installed (no pyproject.toml/board/ around the package), the packaged copy answers; a
    missing one is a PumprigError naming where it looked, not a hint at an undocumented
    variable."""
    monkeypatch.delenv("PUMPRIG_BOARD_DIR", raising=False)
    pkg = tmp_path / "site-packages" / "pumprig"
    (pkg / "_board" / "boards").mkdir(parents=True)
    monkeypatch.setattr(firmware, "_HERE", pkg)
    monkeypatch.setattr(firmware, "_CHECKOUT", tmp_path)
    with pytest.raises(PumprigError, match="installed package"):
        firmware.board_dir()
    (pkg / "_board" / "main.py").write_text("")
    assert firmware.board_dir() == pkg / "_board"
    assert firmware.board_config_path("sim") == pkg / "_board" / "boards" / "sim.json"
    assert firmware.examples_dir() == pkg / "_examples"


def test_board_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("PUMPRIG_BOARD_DIR", str(tmp_path))
    with pytest.raises(PumprigError, match="PUMPRIG_BOARD_DIR"):
        firmware.board_dir()
    (tmp_path / "main.py").write_text("")
    assert firmware.board_dir() == tmp_path


def test_wheel_carries_firmware_board_files_shim_examples_and_plugin(tmp_path):
    """Issue 14: the built wheel lacked board/, the board JSON files and the HIL plugin."""
    src = tmp_path / "src"          # a copy: the build writes build/ and egg-info beside it
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "host", "board", "examples", "hil"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    (whl,) = tmp_path.glob("pumprig-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    board = {str(p.relative_to(ROOT / "board")) for p in (ROOT / "board").rglob("*")
             if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts}
    assert {"pumprig/_board/" + n for n in board} <= names
    assert "pumprig/_board/boards/sim.json" in names and "pumprig/_board/main.py" in names
    for n in ("_power.py", "_uart.py", "_world.py", "machine.py"):
        assert "pumprig/virtual/shim/" + n in names
    assert "pumprig/_examples/p1-baclofen-continuous.toml" in names
    assert "pumprig_hil/plugin.py" in names and "pumprig/firmware.py" in names
    (ep,) = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(whl).read(ep).decode()
    assert "[pytest11]" in text and "pumprig = pumprig_hil.plugin" in text


def _children():
    """PIDs of this process's live children (from /proc/*/stat)."""
    me = os.getpid()
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path("/proc", d, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(d))
    return out


def test_simulate_without_firmware_starts_no_rig(monkeypatch, tmp_path):
    """Issue 14: an installed `simulate` without its firmware failed with "set
    PUMPRIG_BOARD_DIR" and left the virtual rig running. The firmware is now looked up before
    a rig starts, so nothing starts."""
    from pumprig import simulate
    from pumprig.plans import load_plan_file

    plan, _ = load_plan_file(ROOT / "examples" / "p1-baclofen-continuous.toml")
    monkeypatch.setenv("PUMPRIG_BOARD_DIR", str(tmp_path / "nowhere"))
    before = _children()
    try:
        with pytest.raises(PumprigError, match="nowhere"):
            simulate.simulate(plan, 1, 20_000_000, 1_798_761_600)
        assert _children() - before == set()
    finally:
        for pid in _children() - before:
            os.kill(pid, 15)


def test_simulate_failing_to_install_stops_its_rig(monkeypatch):
    """Issue 14: the firmware was installed outside the try that stops simulate's own rig, so
    a failure there left the launcher and the interpreter running."""
    from pumprig import simulate
    from pumprig.plans import load_plan_file

    plan, _ = load_plan_file(ROOT / "examples" / "p1-baclofen-continuous.toml")

    from pumprig.virtual import firmware as vfw

    def broken(fs, *args, **kwargs):
        raise PumprigError("cannot write the rig's filesystem (test)")

    monkeypatch.setattr(vfw, "install", broken)
    before = _children()
    try:
        with pytest.raises(PumprigError, match="test"):
            simulate.simulate(plan, 1, 20_000_000, 1_798_761_600)
        assert _children() - before == set()
    finally:
        for pid in _children() - before:
            os.kill(pid, 15)


@pytest.mark.parametrize("argv", [
    ["simulate", "--days", "1", str(ROOT / "examples" / "p1-baclofen-continuous.toml")],
    ["demo", "--days", "1"],
])
def test_missing_firmware_is_one_line(tmp_path, argv):
    """The CLI says so in one `pumprig:` line, naming where it looked, with no traceback."""
    env = dict(os.environ, PUMPRIG_BOARD_DIR=str(tmp_path / "nowhere"),
               PUMPRIG_HOME=str(tmp_path / "home"))
    if argv[0] == "demo":
        argv = argv + ["--out", str(tmp_path / "out")]
    r = subprocess.run([sys.executable, "-m", "pumprig.cli"] + argv, env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("pumprig:")], r.stderr
    assert "nowhere" in r.stderr
