"""The board's settings of the battery monitor, the reservoir and the tones, checked at power-on.

Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"): each function takes plain
settings, raises ValueError naming the first one out of range, and returns the checked values
as a tuple; the owner's constructor (BatteryMonitor, Reservoir, TonePlayer) assigns its own
fields from it.
"""


def _int(name, v, lo=0):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError("%s must be an integer >= %d" % (name, lo))
    return v


def battery(eri_mv=3300, eos_mv=3000, brownout_mv=2800, hyst_mv=50, debounce=8, eri_days=90,
            shift=2):
    """(eri_mv, eos_mv, brownout_mv, hyst_mv, debounce, eri_days, shift), checked."""
    for name, v in (("eri_mv", eri_mv), ("eos_mv", eos_mv), ("brownout_mv", brownout_mv),
                    ("hyst_mv", hyst_mv), ("eri_days", eri_days), ("shift", shift)):
        _int(name, v)
    _int("debounce", debounce, 1)
    if not eos_mv < eri_mv:
        raise ValueError("need eos_mv < eri_mv")
    if shift > 8:
        raise ValueError("shift must be <= 8")
    return (eri_mv, eos_mv, brownout_mv, hyst_mv, debounce, eri_days, shift)


def reservoir(capacity_nl, low_nl=2_000_000, empty_nl=1_000_000, volume_nl=0):
    """(capacity_nl, low_nl, empty_nl, volume_nl), checked: 0 <= empty_nl <= low_nl <=
    capacity_nl (Reservoir.set_thresholds checks the same for a plan), volume_nl <=
    capacity_nl."""
    _int("capacity_nl", capacity_nl, 1)
    for v in (low_nl, empty_nl):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("low_nl and empty_nl must be integers >= 0")
    if empty_nl > low_nl or low_nl > capacity_nl:
        raise ValueError("need 0 <= empty_nl <= low_nl <= capacity_nl")
    _int("volume_nl", volume_nl)
    if volume_nl > capacity_nl:
        raise ValueError("volume_nl exceeds the capacity")
    return (capacity_nl, low_nl, empty_nl, volume_nl)


def _total(pattern):
    t = 0
    for _f, d in pattern:
        t += d
    return t


def tones(hi_hz=880, lo_hz=660, critical_pairs=4, critical_tone_ms=250,
          critical_repeat_ms=600_000, single_beeps=3, single_on_ms=500, single_off_ms=500,
          single_repeat_ms=3_600_000, blink_ms=500, test_gap_ms=1000):
    """TonePlayer's patterns from its settings, checked: (critical, single,
    critical_repeat_ms, single_repeat_ms, blink_ms, test pattern, test_ms), a pattern a tuple
    of (freq_hz, dur_ms)."""
    for name, v in (("hi_hz", hi_hz), ("lo_hz", lo_hz), ("critical_pairs", critical_pairs),
                    ("critical_tone_ms", critical_tone_ms), ("single_beeps", single_beeps),
                    ("single_on_ms", single_on_ms), ("single_off_ms", single_off_ms),
                    ("blink_ms", blink_ms), ("critical_repeat_ms", critical_repeat_ms),
                    ("single_repeat_ms", single_repeat_ms)):
        _int(name, v, 1)
    _int("test_gap_ms", test_gap_ms)
    crit = ((hi_hz, critical_tone_ms), (lo_hz, critical_tone_ms)) * critical_pairs
    single = ((hi_hz, single_on_ms), (0, single_off_ms)) * (single_beeps - 1) + (
        (hi_hz, single_on_ms),
    )
    if critical_repeat_ms < _total(crit):
        raise ValueError("critical_repeat_ms is shorter than the pattern")
    if single_repeat_ms < _total(single) + single_off_ms:
        raise ValueError("single_repeat_ms is shorter than the pattern")
    test = crit + ((0, test_gap_ms),) + single if test_gap_ms else crit + single
    return (crit, single, critical_repeat_ms, single_repeat_ms, blink_ms, test, _total(test))
