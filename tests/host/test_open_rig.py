"""One way to open a virtual rig (issue 16): open_rig() installs the firmware as `pumprig flash`
builds it (.mpy modules, main.py and the boot modules as source, the manifest the boot check
verifies) before the rig powers on, from a cache after the first build; rig.connect() holds the
connect-and-retry policy. `pumprig simulate` and the HIL fixture run that .mpy firmware."""

import datetime as dt
import json
import os
import sys
from pathlib import Path

import pytest
from pumprig import flash
from pumprig.virtual import firmware

HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PUMPRIG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_open_rig_runs_the_flashed_mpy_firmware_from_its_first_boot(home):
    """Finding (issue 16): simulations copied the .py sources, so they ran another memory path
    than the .mpy `pumprig flash` installs, and reset the rig after installing into it."""
    from pumprig.virtual.rig import open_rig

    with open_rig(warp=True) as rig:
        c = rig.connect()
        try:
            assert c.status()["therapy"] in ("stopped", "running", "safe")
        finally:
            c.close()
        fs = rig.fs
        with open(os.path.join(fs, flash.MANIFEST)) as f:
            listed = json.load(f)["files"]
        mods = [p for p in listed if p.startswith(("pumpcore/", "hw/"))]
        assert mods and all(p.endswith(".mpy") for p in mods)
        assert not [n for n in os.listdir(os.path.join(fs, "pumpcore")) if n.endswith(".py")]
        for keep in flash.KEEP_PY:      # as flash leaves them: source
            if os.path.exists(os.path.join(firmware.board_dir(), keep)):
                assert keep in listed
        assert "boards/sim.json" in listed and "hw/sim.mpy" in listed
        for path, (size, digest) in listed.items():     # the boot check's view: all match
            assert flash.file_entry(os.path.join(fs, path)) == [size, digest], path
        st = rig.world.status()
        assert st["boots"] == 1 and not st["resets"]     # no reset after the install


def test_the_compiled_firmware_is_cached(home, cache, monkeypatch, tmp_path):
    """Repeated rig starts in the test suite compile once (issue 16)."""
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    first = firmware.build(mp)
    assert os.path.exists(os.path.join(first, flash.MANIFEST))

    def no_compiler(*a, **kw):
        raise AssertionError("compiled again")

    monkeypatch.setattr(flash, "build", no_compiler)
    assert firmware.build(mp) == first
    fs = tmp_path / "fs"
    (fs / "data").mkdir(parents=True)
    (fs / "data" / "keep").write_text("records")
    (fs / "pumpcore").mkdir()
    (fs / "pumpcore" / "stale.py").write_text("x = 1")   # would shadow: removed
    n = firmware.install(str(fs), mp)
    assert n == len(json.loads((fs / flash.MANIFEST).read_text())["files"])
    assert (fs / "data" / "keep").read_text() == "records"
    assert not (fs / "pumpcore" / "stale.py").exists()


def test_simulate_opens_its_rig_with_the_mpy_firmware(home, monkeypatch):
    """`pumprig simulate` runs what `pumprig flash` installs (issue 16)."""
    from pumprig.plans import load_plan_file
    from pumprig.simulate import simulate
    from pumprig.virtual import rig as rigmod

    seen = []
    real = rigmod.open_rig

    def spy(**kw):
        r = real(**kw)
        seen.append(sorted(os.listdir(os.path.join(r.fs, "pumpcore"))))
        return r

    monkeypatch.setattr(rigmod, "open_rig", spy)
    plan, meta = load_plan_file(EXAMPLES / "p1-baclofen-continuous.toml")
    start = int(dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    r = simulate(plan, 1, 20_000_000, start)
    assert r
    assert len(seen) == 1 and seen[0] and all(n.endswith(".mpy") for n in seen[0])


def test_connect_retries_while_the_firmware_boots(home):
    """rig.connect() answers as soon as the firmware does, right after power-on; a rig that
    never answers gives SimError, not a hang."""
    from pumprig.errors import SimError
    from pumprig.virtual.rig import VirtualRig, open_rig

    with open_rig() as rig:
        rig.world.power_cut()
        rig.world.power_on()
        c = rig.connect()
        assert c.info["limits"]["pullin_step_hz"] > 0
        c.close()
    with VirtualRig(blank=True) as bare:        # MicroPython without the firmware
        with pytest.raises(SimError):
            bare.connect(wait_s=1.0, timeout=0.2)
