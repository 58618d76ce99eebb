"""pumpcore.settings checks the battery's, the reservoir's and the tones' settings and returns
them as plain tuples; BatteryMonitor, Reservoir and TonePlayer finish their own set-up from
them (issue 16: the set-up used to finish in the per-call batteryctl/reservoirctl modules,
which assigned the owners' fields). Runs under CPython and MicroPython."""

import sys

from _util import forget_module, raises
from pumpcore import settings
from pumpcore.alarms import TonePlayer
from pumpcore.battery import BatteryMonitor
from pumpcore.reservoir import Reservoir

OTHERS = ("pumpcore.batterystate", "pumpcore.reservoirfill", "pumpcore.alarmlist")


def test_settings_return_plain_values():
    assert settings.battery() == (3300, 3000, 2800, 50, 8, 90, 2)
    assert settings.battery(3400, 3100, 2900, 40, 1, 30, 0) == (3400, 3100, 2900, 40, 1, 30, 0)
    assert settings.reservoir(20_000_000) == (20_000_000, 2_000_000, 1_000_000, 0)
    assert settings.reservoir(5, 4, 3, 2) == (5, 4, 3, 2)
    crit, single, crit_rep, single_rep, blink, test, test_ms = settings.tones(hi_hz=1000,
                                                                              lo_hz=500)
    assert crit == ((1000, 250), (500, 250)) * 4
    assert single == ((1000, 500), (0, 500), (1000, 500), (0, 500), (1000, 500))
    assert (crit_rep, single_rep, blink) == (600_000, 3_600_000, 500)
    assert test == crit + ((0, 1000),) + single and test_ms == 2000 + 1000 + 2500


def test_settings_refuse_out_of_range():
    raises(ValueError, settings.battery, 3000, 3300)  # eos above eri
    raises(ValueError, settings.battery, debounce=0)
    raises(ValueError, settings.battery, shift=9)
    raises(ValueError, settings.battery, eri_days=True)  # a bool is no count of days
    raises(ValueError, settings.reservoir, 0)
    raises(ValueError, settings.reservoir, 10, 20, 5)  # low above capacity
    raises(ValueError, settings.reservoir, 10, 5, 6)  # empty above low
    raises(ValueError, settings.reservoir, 10, volume_nl=11)
    raises(ValueError, settings.tones, hi_hz=0)
    raises(ValueError, settings.tones, critical_repeat_ms=1999)


def test_owners_finish_their_set_up_without_the_state_modules():
    """The constructors assign their own fields from the checked tuples: none of the modules
    that hold the owners' other rare code is imported to build them."""
    for m in OTHERS:
        forget_module(m)
    b = BatteryMonitor(3400, 3100, 2900, 40, 2)
    r = Reservoir(20_000_000, 3_000_000, 500_000, 7_000_000)
    p = TonePlayer(settings.tones())
    assert [m for m in OTHERS if m in sys.modules] == []
    assert (b.eri_mv, b.eos_mv, b.brownout_mv, b.hyst_mv, b.debounce, b.eri_days, b.shift) == (
        3400, 3100, 2900, 40, 2, 90, 2)
    assert b.avg_mv is None and b.state == "ok" and not b.fault and not b.settling()
    assert b.to_dict() == {"avg_mv": None, "eri": False, "eos": False, "fault": False,
                           "eri_epoch_s": None, "fault_epoch_s": None, "fault_mv": None}
    assert (b.n_below_eri, b.n_below_eos, b.n_above_eri, b.n_above_eos) == (0, 0, 0, 0)
    assert (r.capacity_nl, r.low_nl, r.empty_nl, r.volume_nl) == (
        20_000_000, 3_000_000, 500_000, 7_000_000)
    assert r.refilled_epoch_s is None and r.refill_by_epoch_s is None and r.level() == "ok"
    assert p.test_ms == 5500 and p.blink_ms == 500
