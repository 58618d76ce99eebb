"""Dose arithmetic the running pump needs: ng <-> nL, titration steps, the plan's CRC.

Kept apart from the plan rules (pumpcore.plan, which imports these names too): the firmware
keeps this small module loaded and imports the rules only while it checks a plan.
"""

from . import canon


def ng_to_nl(ng, conc_ng_ml):
    """Volume in nL holding `ng` of drug at `conc_ng_ml`, rounded to the nearest nL."""
    return (ng * 1_000_000 + conc_ng_ml // 2) // conc_ng_ml


def nl_to_ng(nl, conc_ng_ml):
    return (nl * conc_ng_ml + 500_000) // 1_000_000


def step_dose_ng_day(basal, index):
    """Daily dose of step `index` (0 = the starting dose) of a step (titration) basal."""
    k = index if index < basal["steps"] else basal["steps"]
    num = basal["ng_day"] * (100 + basal["pct"]) ** k
    return num // (100 ** k)


def crc(plan):
    """The plan's CRC (8 hex digits) over its canonical form; "00000000" for no plan."""
    if plan is None:
        return "00000000"
    return canon.digest(plan)


def bolus_rate_nl_day(nl, dur_ms):
    """The rate (nL/day) that delivers `nl` in `dur_ms`, rounded to the nearest nL/day."""
    return (nl * 86_400_000 + dur_ms // 2) // dur_ms
