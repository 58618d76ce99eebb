"""Power cuts during `pumprig flash` (issue 12, finding 5): the short campaign of
bench/campaign_flash.py (the long one: 50+ cuts, figures in docs/benchmarks.md), and a cut
inside the commit step.

Every cut ends with the old firmware, the new one, or the FIRMWARE safe state answering
`hello` within a bounded wait, never a hang, and `pumprig flash` then brings up the new build.
Before: a cut during the copy left a torn .mpy that hung the import or looped the watchdog.
"""

import os
import sys

import pytest

pytest.importorskip("serial")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import campaign_flash  # noqa: E402


def test_five_power_cuts_during_flash_never_hang_and_flash_repairs():
    fig = campaign_flash.flash_cuts(cuts=5, seed=5)
    assert fig["cuts"] == 5 and fig["hang"] == 0 and fig["repaired"] == 5
    assert fig["old"] + fig["new"] + fig["safe"] == 5
    assert fig["safe_alarm_ok"] == fig["safe"]


def test_a_cut_inside_the_commit_gives_the_safe_state_then_flash_repairs(tmp_path, monkeypatch):
    """The commit step stopped after half its renames (as a cut there would): the files no
    longer match the manifest, the boot check holds the FIRMWARE safe state."""
    import pumprig.flash as fl
    from pumprig.errors import PumprigError
    from pumprig.virtual.rig import VirtualRig

    monkeypatch.setenv("PUMPRIG_HOME", str(tmp_path / "home"))
    va = campaign_flash.make_build(str(tmp_path / "a"), "a")
    vb = campaign_flash.make_build(str(tmp_path / "b"), "b")
    real = fl._commit_script

    def half(changed, removed):
        return real(changed[: len(changed) // 2], []).replace("mv('%s')" % fl.MANIFEST,
                                                               "raise SystemExit(1)")

    with VirtualRig(blank=True) as rig:
        fl.flash(rig.link, board_dir=str(tmp_path / "a"))
        assert campaign_flash.hello(rig.link)[0] == va
        monkeypatch.setattr(fl, "_commit_script", half)
        with pytest.raises(PumprigError):
            fl.flash(rig.link, board_dir=str(tmp_path / "b"), compile_mpy=False)
        rig.world.reset()
        fw, st = campaign_flash.hello(rig.link)
        assert fw == "safe" and st["alarms"] == ["FIRMWARE"] and st["bad"]
        assert not rig.world.measure()["enabled"]
        monkeypatch.setattr(fl, "_commit_script", real)
        fl.flash(rig.link, board_dir=str(tmp_path / "b"), compile_mpy=False)
        assert campaign_flash.hello(rig.link)[0] == vb
