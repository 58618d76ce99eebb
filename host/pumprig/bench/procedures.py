"""Gravimetric bench procedures: step calibration, flow run (start-up and trumpet curves) and
bolus series.

The procedures talk to the pump through :class:`pumprig.bench.rig.BenchRig` (a clock, the rate,
raw steps, the calibration) and to the balance through :class:`pumprig.balance.Balance`. On the
virtual rig the clock is the world's virtual clock, so a two-hour run takes seconds; on a real
bench the same code sleeps.

Volumes from masses: ``volume_nl = mass_ug / density_g_ml`` (1 ug of liquid of density d g/mL
is 1/d nL).
"""

from pumprig import trumpet
from pumprig.bench.rig import BenchError

DEFAULT_DENSITY_G_ML = trumpet.DEFAULT_DENSITY_G_ML


def _wait(rig, seconds):
    if seconds > 0:
        rig.wait_until_s(rig.now_s() + seconds)


def _weigh_steps(rig, balance, steps, settle_s):
    """Mass in ug that ``steps`` motor steps put on the balance: stable reading before, the
    steps, ``settle_s`` for the drop to fall and the reading to settle, stable reading after."""
    before = balance.weigh_stable()
    rig.run_steps(steps)
    _wait(rig, settle_s)
    return balance.weigh_stable() - before


def _volume_nl(mass_ug, density):
    return mass_ug / density


def _mean_sd(values):
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, sd


# --------------------------------------------------------------------------------------------
# calibration


def calibrate(rig, balance, steps=400, repeats=5, density=DEFAULT_DENSITY_G_ML, settle_s=10,
              apply=True, max_sd_pct=None, progress=None):
    """Measure the volume of one motor step by weighing ``repeats`` runs of ``steps`` steps.

    Each run: stable weight, ``rig.run_steps(steps)``, wait ``settle_s`` for the last drop and
    the balance, stable weight; the difference is that run's mass. The calibration is the mean
    pL per step rounded to an integer; the spread is given as the sample SD and the range, both
    in % of the mean. With ``apply`` (default) it is stored with ``rig.set_step_pl``, unless its
    SD exceeds ``max_sd_pct`` (then BenchError, nothing stored).

    Returns ``{steps, repeats, density_g_ml, runs: [{mass_ug, volume_nl, step_pl}],
    step_pl_mean, step_pl, sd_pct, range_pct, previous_step_pl, change_pct, applied}``.
    """
    if steps < 1 or repeats < 1:
        raise BenchError("calibration needs at least one step and one repeat")
    if density <= 0:
        raise BenchError("density must be positive")
    previous = int(rig.get_step_pl())
    runs = []
    for k in range(repeats):
        mass = _weigh_steps(rig, balance, steps, settle_s)
        if mass <= 0:
            raise BenchError("run %d of %d steps put %d ug on the balance: is the outlet in the "
                             "vessel and the line primed?" % (k + 1, steps, mass))
        vol = _volume_nl(mass, density)
        runs.append({"mass_ug": mass, "volume_nl": vol, "step_pl": vol * 1000.0 / steps})
        if progress:
            progress("calibrate", k + 1, repeats)
    per_step = [r["step_pl"] for r in runs]
    mean, sd = _mean_sd(per_step)
    step_pl = int(round(mean))
    result = {
        "steps": steps,
        "repeats": repeats,
        "density_g_ml": density,
        "runs": runs,
        "step_pl_mean": mean,
        "step_pl": step_pl,
        "sd_pct": 100.0 * sd / mean,
        "range_pct": 100.0 * (max(per_step) - min(per_step)) / mean,
        "previous_step_pl": previous,
        "change_pct": 100.0 * (step_pl - previous) / previous if previous else None,
        "applied": False,
    }
    if max_sd_pct is not None and result["sd_pct"] > max_sd_pct:
        raise BenchError("calibration spread %.2f %% SD is above the limit %.2f %%: not stored"
                         % (result["sd_pct"], max_sd_pct))
    if apply:
        rig.set_step_pl(step_pl)
        result["applied"] = True
    return result


# --------------------------------------------------------------------------------------------
# flow run


def bench_run(rig, balance, rate_nl_day, duration_s, sample_s=30, progress=None, boluses=0,
              bolus_volume_nl=None, density=DEFAULT_DENSITY_G_ML, windows_min=None,
              extra_windows_min=None, analysis="auto", cycle_averaging=None, tare=True,
              settle_s=10):
    """Deliver at ``rate_nl_day`` for ``duration_s`` while weighing every ``sample_s``.

    Sequence: tare (if ``tare``), weigh at t=0, ``start_rate``, then ``weigh_now`` at
    t0 + k*S for k = 1..duration/S (the scheduled instants, so the grid does not drift), stop.
    The pulse period (``step_pl * 86.4 / rate_nl_day`` s, from the rig's calibration) goes to
    :func:`pumprig.trumpet.analyse`, which averages over whole step cycles when the pulse is
    long against S. Then, if ``boluses``, a series of ``boluses`` boluses of
    ``bolus_volume_nl``, each made as ``round(volume * 1000 / step_pl)`` steps and weighed on
    its own (stable before and after, ``settle_s`` apart after the steps).

    ``progress(phase, done, total)`` is called after each sample ("run") and bolus ("bolus").

    Returns a JSON-able dict: the analysis (see ``trumpet.analyse``: ``windows_min``, ``ep_max``,
    ``ep_min``, ``trumpet``, ``overall_error_pct``, ``startup``, ``analysis``, ``cycle``...) plus
    ``rate_nl_day``, ``duration_s``, ``n_samples``, ``step_pl``, ``pulse_period_s``,
    ``samples`` ([[t_s, mass_ug], ...]) and ``boluses`` (see ``trumpet.bolus_stats`` plus
    ``steps`` and ``programmed_nl``; None when no series).
    """
    rate_nl_day = int(rate_nl_day)
    if rate_nl_day <= 0:
        raise BenchError("rate must be positive")
    if sample_s <= 0 or duration_s < 2 * sample_s:
        raise BenchError("the run must last at least two sample periods")
    if boluses and not bolus_volume_nl:
        raise BenchError("a bolus series needs a bolus volume")
    step_pl = int(rig.get_step_pl())
    pulse_s = trumpet.pulse_period_s(step_pl, rate_nl_day)
    n = int(duration_s // sample_s)

    if tare:
        balance.tare()
    t0 = rig.now_s()
    samples = [[0.0, balance.weigh_now()]]
    expect = getattr(rig, "expect_run_s", None)
    if expect is not None:
        expect(n * sample_s)
    rig.start_rate(rate_nl_day)
    try:
        for k in range(1, n + 1):
            rig.wait_until_s(t0 + k * sample_s)
            mass = balance.weigh_now()
            samples.append([rig.now_s() - t0, mass])
            if progress:
                progress("run", k, n)
    finally:
        rig.stop()

    grams = [(t, m / 1e6) for t, m in samples]
    result = trumpet.analyse(
        grams, trumpet.rate_ml_h(rate_nl_day), sample_s=sample_s, density=density,
        windows_min=windows_min or trumpet.STANDARD_WINDOWS_MIN,
        extra_windows_min=extra_windows_min, analysis=analysis, pulse_period_s=pulse_s,
        cycle_averaging=cycle_averaging)
    result.update({
        "rate_nl_day": rate_nl_day,
        "duration_s": n * sample_s,
        "step_pl": step_pl,
        "pulse_period_s": pulse_s,
        "samples": samples,
        "boluses": None,
    })
    if boluses:
        result["boluses"] = bolus_series(rig, balance, boluses, bolus_volume_nl, density,
                                         settle_s, progress)
    return result


def bolus_series(rig, balance, count, volume_nl, density=DEFAULT_DENSITY_G_ML, settle_s=10,
                 progress=None):
    """``count`` boluses of ``volume_nl`` weighed one by one (see :func:`bench_run`)."""
    step_pl = int(rig.get_step_pl())
    steps = int(round(volume_nl * 1000.0 / step_pl))
    if steps < 1:
        raise BenchError("a %s nL bolus is less than one step of %d pL" % (volume_nl, step_pl))
    delivered = []
    masses = []
    for k in range(count):
        mass = _weigh_steps(rig, balance, steps, settle_s)
        masses.append(mass)
        delivered.append(_volume_nl(mass, density))
        if progress:
            progress("bolus", k + 1, count)
    stats = trumpet.bolus_stats(delivered, volume_nl)
    stats.update({"unit": "nL", "steps": steps, "programmed_nl": steps * step_pl / 1000.0,
                  "mass_ug": masses})
    return stats

