"""Gravimetric bench procedures: step calibration, flow run (start-up and trumpet curves), bolus
series, and the report.

The procedures talk to the pump through :class:`BenchRig` (a small interface: a clock, the
rate, raw steps, the calibration) and to the balance through :class:`pumprig.balance.Balance`.
On the virtual rig the clock is the world's virtual clock, so a two-hour run takes seconds; on
a real bench the same code sleeps.

Volumes from masses: ``volume_nl = mass_ug / density_g_ml`` (1 ug of liquid of density d g/mL
is 1/d nL).
"""

import argparse
import base64
import csv
import html
import json
import os
import re
import sys

from pumprig import argtypes, trumpet
from pumprig.errors import PumprigError

DEFAULT_DENSITY_G_ML = trumpet.DEFAULT_DENSITY_G_ML


class BenchError(PumprigError):
    """A bench procedure could not produce a trustworthy result."""


class BenchRig:
    """What the bench procedures need from a pump rig. Subclass it (or provide the same
    methods); every method here raises NotImplementedError.

    Times are seconds on one monotonic clock (the world's virtual clock on the virtual rig,
    the host's monotonic clock on a real bench).
    """

    def now_s(self):
        """Current time, seconds (float)."""
        raise NotImplementedError

    def wait_until_s(self, t_s):
        """Return once ``now_s() >= t_s``. Virtual rig: advance the world's clock (the firmware
        runs meanwhile); real bench: sleep. Returns at once if ``t_s`` is past."""
        raise NotImplementedError

    def start_rate(self, rate_nl_day):
        """Deliver continuously at ``rate_nl_day`` (integer nL/day) from now until stop()."""
        raise NotImplementedError

    def stop(self):
        """Stop any delivery (rate or steps); the motor is idle when this returns."""
        raise NotImplementedError

    def run_steps(self, steps):
        """Make ``steps`` forward motor steps (bench/calibration move, therapy stopped) and
        return when the last one is done."""
        raise NotImplementedError

    def get_step_pl(self):
        """The rig's calibration: picolitres per step (int)."""
        raise NotImplementedError

    def set_step_pl(self, step_pl):
        """Store a new calibration (int pL per step) on the rig."""
        raise NotImplementedError

    def expect_run_s(self, seconds):
        """Optional hint before :meth:`start_rate`: the run should last about ``seconds`` (a
        rig may bound its delivery with it). The default ignores it."""

    def close(self):
        """Release the rig (connections, a throwaway virtual rig). The default does nothing."""


def _wait(rig, seconds):
    if seconds > 0:
        rig.wait_until_s(rig.now_s() + seconds)


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
        before = balance.weigh_stable()
        rig.run_steps(steps)
        _wait(rig, settle_s)
        after = balance.weigh_stable()
        mass = after - before
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
        before = balance.weigh_stable()
        rig.run_steps(steps)
        _wait(rig, settle_s)
        after = balance.weigh_stable()
        masses.append(after - before)
        delivered.append(_volume_nl(after - before, density))
        if progress:
            progress("bolus", k + 1, count)
    stats = trumpet.bolus_stats(delivered, volume_nl)
    stats.update({"unit": "nL", "steps": steps, "programmed_nl": steps * step_pl / 1000.0,
                  "mass_ug": masses})
    return stats


# --------------------------------------------------------------------------------------------
# report


def _fmt(x, spec="%.2f"):
    return "-" if x is None else spec % x


def _plot_startup(results, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    st = results["startup"]
    ax.plot(st["t_min"], st["flow_ml_h"], lw=0.6, color="0.6" if "flow_avg_ml_h" in st else None,
            label="Q_i (per sample)")
    if "flow_avg_ml_h" in st:
        pts = [(t, q) for t, q in zip(st["t_min"], st["flow_avg_ml_h"], strict=True)
               if q is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.5,
                label="over %d whole pulse cycles" % results["cycle"]["span_cycles"])
    ax.axhline(results["rate_ml_h"], color="k", ls="--", lw=1, label="set rate")
    a = results["analysis"]
    ax.axvspan(a["start_s"] / 60.0, a["end_s"] / 60.0, color="0.9", label="analysis period")
    ax.set_xlabel("time (min)")
    ax.set_ylabel("flow (mL/h)")
    ax.set_title("Start-up curve, %g nL/day" % results["rate_nl_day"])
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_trumpet(results, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = sorted((r["window_min"], r["ep_max"], r["ep_min"]) for r in results["trumpet"]
                 if r["ep_max"] is not None)  # added windows come after the standard ones
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="Ep(max)")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], "s-", label="Ep(min)")
    ax.axhline(results["overall_error_pct"], color="k", ls="--", lw=1,
               label="A = %.2f %%" % results["overall_error_pct"])
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("observation window P (min)")
    ax.set_ylabel("error (%)")
    ax.set_title("Trumpet curve")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _img(path):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return '<img alt="%s" src="data:image/png;base64,%s">' % (
        html.escape(os.path.basename(path)), data)


def _html(results, startup_png, trumpet_png):
    e = html.escape
    cyc = results["cycle"]
    a = results["analysis"]
    rows = "".join(
        "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
        % (e(str(r["window_min"])), e(str(r["window_eff_min"])), r["positions"],
           _fmt(r["ep_max"]), _fmt(r["ep_min"]))
        for r in results["trumpet"])
    summary = [
        ("set rate", "%d nL/day (%.6g mL/h)" % (results["rate_nl_day"], results["rate_ml_h"])),
        ("duration", "%g min, %d samples every %g s" % (results["duration_s"] / 60.0,
                                                        results["n_samples"],
                                                        results["sample_s"])),
        ("density", "%g g/mL" % results["density_g_ml"]),
        ("calibration", "%d pL/step, pulse period %.2f s" % (results["step_pl"],
                                                             results["pulse_period_s"])),
        ("analysis period", "%g to %g min (%s)" % (a["start_s"] / 60.0, a["end_s"] / 60.0,
                                                   a["rule"])),
        ("whole-cycle averaging",
         ("over %d samples = %s pulse cycles (residual %.3f cycle)"
          % (cyc["span_samples"], cyc["span_cycles"], cyc["residual_cycles"]))
         if cyc["applied"] else "not applied"),
        ("mean flow", "%.6g mL/h" % results["mean_flow_ml_h"]),
        ("overall error A", "%.3f %%" % results["overall_error_pct"]),
    ]
    b = results.get("boluses")
    if b:
        summary += [
            ("bolus series", "%d x %g nL (%d steps)" % (b["n"], b["target"], b["steps"])),
            ("bolus mean error", "%.3f %%" % b["mean_error_pct"]),
            ("largest over / under", "%.3f %% / %.3f %%" % (b["largest_over_pct"],
                                                          b["largest_under_pct"])),
        ]
    srows = "".join("<tr><th>%s</th><td>%s</td></tr>" % (e(k), e(v)) for k, v in summary)
    return """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>pumprig bench report</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #aaa;padding:.2em .6em;
text-align:left}img{max-width:100%%}</style></head><body>
<h1>Gravimetric bench test</h1>
<table>%s</table>
<h2>Start-up curve</h2>%s
<h2>Trumpet curve</h2>%s
<table><tr><th>window P (min)</th><th>effective (min)</th><th>positions</th>
<th>Ep(max) %%</th><th>Ep(min) %%</th></tr>%s</table>
<p>Raw samples: samples.csv; all numbers: results.json.</p>
</body></html>
""" % (srows, _img(startup_png), _img(trumpet_png), rows)


def write_report(results, out_dir):
    """Write ``samples.csv``, ``results.json``, ``startup.png``, ``trumpet.png`` and
    ``report.html`` (both plots embedded, results table) into ``out_dir`` (created).
    Returns ``{"csv", "json", "startup_png", "trumpet_png", "html"}`` paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "csv": os.path.join(out_dir, "samples.csv"),
        "json": os.path.join(out_dir, "results.json"),
        "startup_png": os.path.join(out_dir, "startup.png"),
        "trumpet_png": os.path.join(out_dir, "trumpet.png"),
        "html": os.path.join(out_dir, "report.html"),
    }
    flows = results["startup"]["flow_ml_h"]
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "t_s", "mass_ug", "flow_ml_h"])
        for i, (t, m) in enumerate(results["samples"]):
            w.writerow([i, "%.3f" % t, m, "" if i == 0 else "%.9g" % flows[i - 1]])
    with open(paths["json"], "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    _plot_startup(results, paths["startup_png"])
    _plot_trumpet(results, paths["trumpet_png"])
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(_html(results, paths["startup_png"], paths["trumpet_png"]))
    return paths


# --------------------------------------------------------------------------------------------
# command line: `pumprig bench` and `pumprig calibrate`

_NUM = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"
_RATE_NL_DAY = {"nl/day": 1, "nl/d": 1, "ul/day": 1000, "ul/d": 1000, "ml/day": 1_000_000,
                "ml/d": 1_000_000, "ul/h": 24_000, "ml/h": 24_000_000}
_VOLUME_NL = {"nl": 1, "ul": 1000, "ml": 1_000_000}
_DURATION_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400,
               "day": 86400}


def _unit(text):
    return text.strip().lower().replace("\u00b5", "u").replace("\u03bc", "u").replace(" ", "")


def parse_rate(text):
    """``"0.5 mL/day"`` -> 500000 (nL/day). Units nL/day, uL/day, mL/day, uL/h, mL/h; a bare
    number is nL/day."""
    m = re.fullmatch(_NUM + r"([^\s].*)?", text)
    if not m:
        raise PumprigError("cannot read the rate %r (e.g. \"0.5 mL/day\")" % text)
    unit = _unit(m.group(2) or "nl/day")
    if unit not in _RATE_NL_DAY:
        raise PumprigError("unknown rate unit %r (nL/day, uL/day, mL/day, uL/h, mL/h)"
                           % m.group(2))
    value = int(round(float(m.group(1)) * _RATE_NL_DAY[unit]))
    if value <= 0:
        raise PumprigError("the rate must be positive")
    return value


def parse_volume(text):
    """``"10 uL"`` -> 10000 (nL). Units nL, uL, mL; a bare number is nL."""
    m = re.fullmatch(_NUM + r"([^\s].*)?", text)
    unit = _unit(m.group(2) or "nl") if m else None
    if not m or unit not in _VOLUME_NL:
        raise PumprigError("cannot read the volume %r (e.g. \"10 uL\")" % text)
    value = int(round(float(m.group(1)) * _VOLUME_NL[unit]))
    if value <= 0:
        raise PumprigError("the volume must be positive")
    return value


def parse_duration(text):
    """``"2h"``, ``"90 min"``, ``"1h30m"``, ``"30s"`` -> seconds (float); a bare number is s."""
    t = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"[0-9]*\.?[0-9]+", t):
        return float(t)
    parts = re.findall(r"([0-9]*\.?[0-9]+)([a-z]+)", t)
    if not parts or "".join(a + b for a, b in parts) != t:
        raise PumprigError("cannot read the duration %r (e.g. \"2h\", \"90min\", \"30s\")" % text)
    total = 0.0
    for num, unit in parts:
        if unit not in _DURATION_S:
            raise PumprigError("unknown time unit %r in %r (s, min, h, d)" % (unit, text))
        total += float(num) * _DURATION_S[unit]
    if total <= 0:
        raise PumprigError("the duration must be positive")
    return total


def parse_windows(text):
    """``"60,120,240"`` -> [60, 120, 240] (minutes)."""
    try:
        out = [trumpet._tidy(float(x)) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise PumprigError("cannot read the windows %r (minutes, comma separated)" % text) from e
    if not out or min(out) <= 0:
        raise PumprigError("windows must be positive minutes")
    return out


def parse_analysis(text):
    """``auto``, ``second-hour``, ``second-half``, ``after-first-hour`` or ``START-END`` with
    durations (``"1h-25h"``)."""
    if text in trumpet.ANALYSIS_RULES:
        return text
    if "-" in text:
        a, b = text.split("-", 1)
        return (parse_duration(a), parse_duration(b))
    raise PumprigError("cannot read the analysis period %r (auto, second-hour, second-half, "
                       "after-first-hour or START-END like 1h-25h)" % text)


def parse_pump_error(text):
    """``"-3%"`` or ``"-3"`` -> -0.03 (a fraction; the number is in percent)."""
    t = text.strip().rstrip("%").strip()
    try:
        value = float(t) / 100.0
    except ValueError:
        raise PumprigError("cannot read the pump error %r (percent, e.g. -3%%)" % text) from None
    if not -0.5 < value < 0.5:
        raise PumprigError("the pump error must be within +-50 %%, got %r" % text)
    return value


def _allow_negative_values(parser):
    """Let ``--pump-error -3%`` parse as a value, not an option (argparse only takes plain
    negative numbers as values). ``--pump-error=-3%`` works in any case."""
    matcher = getattr(parser, "_negative_number_matcher", None)
    if matcher is not None:
        parser._negative_number_matcher = re.compile(r"^-\d+%?$|^-\d*\.\d+%?$")


def _common(p):
    # no default: the global `pumprig --port P` (or $PUMPRIG_PORT) must not be overwritten
    p.add_argument("--port", default=argparse.SUPPRESS,
                   help='the rig: a serial port, a running virtual rig\'s link, or "sim" for a '
                        "throwaway virtual rig with its virtual balance (virtual time)")
    p.add_argument("--balance", default=None,
                   help="the balance's serial port (URL or device); default for a virtual rig: "
                        "its virtual balance")
    p.add_argument("--balance-baud", type=int, default=9600, help="balance baud rate (9600)")
    p.add_argument("--balance-timeout", type=argtypes.seconds, default=10.0,
                   help="seconds to wait for a balance answer (10)")
    p.add_argument("--density", type=argtypes.positive, default=DEFAULT_DENSITY_G_ML,
                   help="liquid density in g/mL (0.998, water at 20 C)")
    p.add_argument("--settle", type=parse_duration, default=10.0,
                   help="wait after a step move before a stable weighing (10s)")
    p.add_argument("--pump-error", type=parse_pump_error, default=None, metavar="PCT",
                   help="virtual rig only: make its mechanism deliver PCT %% off the nominal "
                        "step (e.g. -3%% for a slow pump); stays set on a running rig")
    p.add_argument("--sim-state", default=None, metavar="DIR",
                   help="with --port sim: keep the throwaway rig's board files (calibration) "
                        "and keys in DIR, so a later --port sim run continues from them")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _allow_negative_values(p)


def add_parser(subparsers):
    """Add ``bench`` and ``calibrate`` to the CLI's subparsers; each sets ``func=run``."""
    p = subparsers.add_parser(
        "bench", help="gravimetric flow test: start-up and trumpet curves, bolus series",
        description="Deliver at a rate into a vessel on a balance, sample the mass, and compute "
                    "the start-up curve, the trumpet curve (Ep(max)/Ep(min) per window) and the "
                    "overall error, IEC 60601-2-24 style. See docs/bench.md.")
    _common(p)
    p.add_argument("--rate", type=parse_rate, required=True,
                   help='rate, e.g. "0.5 mL/day" or "500000 nL/day"')
    p.add_argument("--duration", type=parse_duration, default=7200.0, help="run length (2h)")
    p.add_argument("--sample", type=parse_duration, default=30.0, help="sample period (30s)")
    p.add_argument("--windows", type=parse_windows, default=None,
                   help="extra observation windows in minutes, e.g. 60,120,240")
    p.add_argument("--windows-scale", type=argtypes.positive, default=None,
                   help="add the standard windows scaled by this factor (implant rates)")
    p.add_argument("--analysis", type=parse_analysis, default="auto",
                   help="analysis period: auto (second hour, or second half of a shorter run), "
                        "second-hour, second-half, after-first-hour or START-END")
    p.add_argument("--boluses", type=int, default=0, help="bolus series length (e.g. 25)")
    p.add_argument("--bolus-volume", type=parse_volume, default=None, help='e.g. "10 uL"')
    p.add_argument("--out", default=None, help="write CSV, JSON, PNG plots and HTML here")
    p.set_defaults(func=run, bench_command="bench")

    c = subparsers.add_parser(
        "calibrate", help="weigh runs of motor steps and store the pL-per-step calibration",
        description="Run a known number of steps into a vessel on a balance, repeat, and store "
                    "the mean volume per step on the rig (calib.set). See docs/bench.md.")
    _common(c)
    c.add_argument("--steps", type=int, default=400, help="steps per run (400)")
    c.add_argument("--repeats", type=int, default=5, help="runs (5)")
    c.add_argument("--max-sd", type=argtypes.positive, default=None,
                   help="refuse to store when the SD between runs exceeds this (%%)")
    c.add_argument("--dry-run", action="store_true", help="measure but do not store")
    c.set_defaults(func=run, bench_command="calibrate")
    return p, c


def make_bench_rig(args):
    """Open the :class:`BenchRig` for ``args.port`` (see :mod:`pumprig.benchrig`): ``"sim"``
    starts a throwaway virtual rig, a running virtual rig's link drives it in virtual time,
    anything else is a board over the protocol. Applies ``--pump-error`` (virtual rigs only).
    The caller closes the rig."""
    from pumprig import benchrig

    port = getattr(args, "port", None)
    sim_state = getattr(args, "sim_state", None)
    if sim_state and port != "sim":
        raise PumprigError("--sim-state goes with --port sim")
    if port == "sim":
        rig = benchrig.start_sim(state_dir=sim_state)
    else:
        rig = benchrig.open_bench_rig(port, timeout=getattr(args, "timeout", 2.0))
    try:
        err = getattr(args, "pump_error", None)
        if err is not None:
            if not isinstance(rig, benchrig.VirtualBenchRig):
                raise PumprigError("--pump-error works on a virtual rig only (it sets the "
                                   "simulated mechanism); %s is a board" % port)
            rig.set_true_step_pl(int(round(rig.nominal_step_pl * (1.0 + err))))
    except BaseException:
        rig.close()
        raise
    return rig


def _progress_writer(err, enabled):
    """A progress bar on ``err``: redrawn in place on a terminal; on a pipe or file, one line
    per tenth of the phase."""
    tty = hasattr(err, "isatty") and err.isatty()
    last = {}

    def progress(phase, done, total):
        if not enabled:
            return
        width = 30
        full = width * done // total if total else width
        bar = "%-9s [%s%s] %d/%d" % (phase, "#" * full, "." * (width - full), done, total)
        if tty:
            err.write("\r" + bar + ("\n" if done >= total else ""))
        else:
            tenth = 10 * done // total if total else 10
            if last.get(phase) == tenth:
                return
            last[phase] = tenth
            err.write(bar + "\n")
        err.flush()

    return progress


def run(args, out=None, err=None):
    """Run ``pumprig bench`` or ``pumprig calibrate``; returns the exit status. Failures are
    PumprigError (the CLI prints ``pumprig: message`` and exits 1)."""
    from pumprig.balance import Balance

    out = out or sys.stdout
    err = err or sys.stderr
    show = not args.json or (hasattr(err, "isatty") and err.isatty())
    progress = _progress_writer(err, show)
    if args.bench_command == "bench" and args.boluses and not args.bolus_volume:
        raise PumprigError("--boluses needs --bolus-volume")

    rig = make_bench_rig(args)
    try:
        ready = getattr(rig, "ready_for_bench", None)
        if args.bench_command == "bench" and ready is not None:
            ready()
        balance_port = args.balance or getattr(rig, "balance_link", None)
        if not balance_port:
            raise PumprigError("no balance: give --balance PORT (the balance's serial port)")
        with Balance(balance_port, timeout=args.balance_timeout,
                     baudrate=args.balance_baud) as bal:
            if args.bench_command == "calibrate":
                res = calibrate(rig, bal, steps=args.steps, repeats=args.repeats,
                                density=args.density, settle_s=args.settle,
                                apply=not args.dry_run, max_sd_pct=args.max_sd,
                                progress=progress)
            else:
                extra = list(args.windows or [])
                if args.windows_scale:
                    extra += trumpet.scaled_windows_min(args.windows_scale)
                res = bench_run(rig, bal, args.rate, args.duration, sample_s=args.sample,
                                progress=progress, boluses=args.boluses,
                                bolus_volume_nl=args.bolus_volume, density=args.density,
                                extra_windows_min=extra or None, analysis=args.analysis,
                                settle_s=args.settle)
    finally:
        rig.close()

    if args.bench_command == "calibrate":
        if args.json:
            out.write(json.dumps(res, sort_keys=True) + "\n")
            return 0
        for k, r in enumerate(res["runs"]):
            out.write("  run %d: %d steps, %d ug, %.3f nL, %.1f pL/step\n"
                      % (k + 1, res["steps"], r["mass_ug"], r["volume_nl"], r["step_pl"]))
        out.write("calibration %d pL/step (was %d, %+.2f %%), SD %.3f %%, range %.3f %%, %s\n"
                  % (res["step_pl"], res["previous_step_pl"], res["change_pct"] or 0.0,
                     res["sd_pct"], res["range_pct"],
                     "stored" if res["applied"] else "not stored"))
        return 0

    paths = write_report(res, args.out) if args.out else None
    if args.json:
        out.write(json.dumps({"results": res, "files": paths}, sort_keys=True) + "\n")
        return 0
    cyc = res["cycle"]
    out.write("rate %d nL/day (%.6g mL/h), %d pL/step: one step every %.2f s; %d samples every"
              " %g s\n" % (res["rate_nl_day"], res["rate_ml_h"], res["step_pl"],
                           res["pulse_period_s"], res["n_samples"], res["sample_s"]))
    if cyc["applied"]:
        out.write("whole-cycle averaging over %d samples = %s pulse cycles (residual %.3f)\n"
                  % (cyc["span_samples"], cyc["span_cycles"], cyc["residual_cycles"]))
    out.write("overall error A %+.3f %% over %s (%g-%g min, %d samples)\n"
              % (res["overall_error_pct"], res["analysis"]["rule"],
                 res["analysis"]["start_s"] / 60.0, res["analysis"]["end_s"] / 60.0,
                 res["n_samples"]))
    for r in res["trumpet"]:
        out.write("  P = %6s min  Ep(max) %8s %%  Ep(min) %8s %%\n"
                  % (r["window_min"], _fmt(r["ep_max"], "%+.3f"), _fmt(r["ep_min"], "%+.3f")))
    if res["boluses"]:
        b = res["boluses"]
        out.write("boluses: mean %+.3f %%, largest over %+.3f %%, largest under %+.3f %%\n"
                  % (b["mean_error_pct"], b["largest_over_pct"], b["largest_under_pct"]))
    if paths:
        out.write("report: %s\n" % paths["html"])
    return 0
