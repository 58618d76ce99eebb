"""Gravimetric flow analysis: start-up curve, trumpet curve, overall error, bolus series.

The method is the one IEC 60601-2-24 describes for infusion pumps, used here as a *method* for a
low-rate implantable pump (the standard itself excludes implants). Everything is pure: the
input is a list of balance samples ``(t_s, mass_g)``, the output is plain dicts and lists that
``json.dumps`` accepts. Standard library only.

Terms (all errors are signed percentages of the set rate ``r``):

``S``  the sample period (default 30 s). The samples must lie on a regular grid of period S
       (each interval within ``grid_tolerance`` of S); a missed or doubled reading is an error,
       because every window length below is counted in samples.
``Q_i`` the flow of interval i, from sample i-1 to sample i, in mL/h:
       ``Q_i = 3600 * (W_i - W_{i-1}) / (d * (t_i - t_{i-1}))``. On an exact grid this is the
       standard's ``60 * (W_i - W_{i-1}) / (S_min * d)``; using the measured interval keeps a
       real bench's timing jitter out of the flow.
start-up curve
       every Q_i of the run against the end time of its interval (plus ``flow_avg_ml_h``, the
       flow over the last whole-cycle span, when whole-cycle averaging is applied).
analysis period
       the part of the run the trumpet curve and ``A`` are computed on. See
       :func:`analysis_period`: by default the second hour (60 to 120 min) of a run of at least
       two hours, or the second half of a shorter run. A flow belongs to the period when its
       whole interval lies inside it.
observation window P
       2, 5, 11, 19 and 31 min by default (``STANDARD_WINDOWS_MIN``); ``m = P / S`` consecutive
       flows. Every position of the window inside the analysis period (stepping one sample) gives
       ``E_p,k = (100 / m) * sum((Q_i - r) / r)``; ``ep_max``/``ep_min`` are the largest and the
       smallest ``E_p,k``. A window longer than the analysis period is reported with
       ``ep_max = ep_min = None`` and a note, never silently dropped.
``A``  the overall error over the analysis period: ``100 * (Q_mean - r) / r`` where ``Q_mean`` is
       the mean of the flows the windows use (so a pump with a constant error e reads e for A
       and for every Ep).

Whole-cycle averaging (pulsed delivery)
---------------------------------------
A stepper pump delivers one pulse of liquid every ``T_p = step volume / rate`` seconds. When
``T_p`` is not small against ``S``, a 30 s interval holds either no pulse or one, so ``Q_i``
swings between 0 and several times ``r``, and a window of length P holds ``floor(P/T_p)`` or
``ceil(P/T_p)`` pulses depending only on where it starts: Ep(max)/Ep(min) then measure the
sampling phase, not the pump (a perfect pump with ``T_p = 43.2 s`` reads +/-30 % on 2 min).

When a pulse period is given and ``T_p >= cycle_min_ratio * S`` (default 0.1: fewer than ten
pulses per sample), :func:`analyse` does two things:

1. **Samples aligned to whole cycles.** It finds the cycle span: the smallest number of
   samples ``n`` (``1 <= n`` and ``n*S <= max(max_span_cycles * T_p, max_span_s)``, defaults
   10 periods and 600 s) such that
   ``n * S`` is a whole number ``c >= 1`` of pulse periods within ``cycle_tolerance`` of a
   period (default 0.02); when none is that close, the ``n`` with the smallest residual.
   Each flow is replaced by the flow over the last span,
   ``Qbar_i = 3600 * (W_i - W_{i-n}) / (d * (t_i - t_{i-n}))``, which is the moving average
   of ``n`` consecutive ``Q``, and equivalently a difference of masses each averaged over ``n``
   samples. When ``n*S`` is exactly ``c`` periods, averaging a staircase over ``n`` samples
   gives a straight line whatever the phase of the pulses (shifting the ``n`` samples by one
   adds exactly ``c`` pulses), so the staircase is removed entirely. When no span up to the
   limit is exactly whole periods, a span holds ``c`` or ``c + 1`` pulses depending on the
   phase, so the averaged mass keeps up to about ``1/n`` pulse of error and a window of ``k``
   pulses up to about ``100 / (n * k)`` % (``artefact_bound_pct`` in each trumpet row; without
   averaging the bound is one whole pulse, ``100 / k`` %). Example: the rig's 0.25 uL step at
   0.5 mL/day comes every 43.2 s; 13 samples = 9.03 periods; the 2 min window keeps <= 2.8 %
   of artefact (about +/-30 % without averaging), 5 min <= 1.1 %.
   The span of the first flows of the analysis period reaches back up to ``n - 1`` samples
   before its start (into the stabilisation time), so the period keeps one flow per sample
   interval and as many window positions as without averaging.
2. **Windows aligned to whole cycles.** Each window P becomes ``k = max(1, round(P / T_p))``
   whole pulse periods, counted in samples ``m = max(1, round(k * T_p / S))``; the effective
   window ``window_eff_min = m * S / 60`` is reported next to the nominal one. (With a short
   pulse the change is below one sample and ``m`` stays ``P / S``.)

The chosen span, its residual and the effective windows are returned under ``"cycle"`` and in
each trumpet row, so a reader can see exactly what was averaged.
"""

import math

from pumprig.errors import PumprigError

STANDARD_WINDOWS_MIN = (2, 5, 11, 19, 31)
DEFAULT_SAMPLE_S = 30
DEFAULT_DENSITY_G_ML = 0.998
NL_PER_ML = 1_000_000


class AnalysisError(PumprigError):
    """The samples cannot be analysed as asked (too few, off the sample grid, bad parameters)."""


# --------------------------------------------------------------------------------------------
# units


def rate_ml_h(rate_nl_day):
    """A rate in nL/day as mL/h."""
    return rate_nl_day / NL_PER_ML / 24.0


def pulse_period_s(step_pl, rate_nl_day):
    """Seconds between steps at ``rate_nl_day`` when one step moves ``step_pl`` picolitres."""
    if step_pl <= 0 or rate_nl_day <= 0:
        raise AnalysisError("step volume and rate must be positive to compute a pulse period")
    # pL per second = rate_nl_day * 1000 / 86400
    return step_pl * 86.4 / rate_nl_day


def scaled_windows_min(factor, base=STANDARD_WINDOWS_MIN):
    """The standard windows stretched by ``factor`` (for implant-range rates), as numbers.

    ``scaled_windows_min(12)`` gives 24, 60, 132, 228, 372 min: the same shape of trumpet on a
    time scale where a low-rate pump delivers a measurable mass per window.
    """
    if factor <= 0:
        raise AnalysisError("window scale factor must be positive")
    return [tidy(w * factor) for w in base]


def tidy(x):
    """An integral float as int (keeps JSON and window lists readable)."""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


# --------------------------------------------------------------------------------------------
# flows


def _check_samples(samples, sample_s, grid_tolerance):
    if sample_s <= 0:
        raise AnalysisError("sample period must be positive")
    if len(samples) < 2:
        raise AnalysisError("need at least two balance samples, got %d" % len(samples))
    out = []
    for k, s in enumerate(samples):
        try:
            t_s, mass_g = float(s[0]), float(s[1])
        except (TypeError, ValueError, IndexError) as e:
            raise AnalysisError("sample %d is not a (t_s, mass_g) pair: %r" % (k, s)) from e
        out.append((t_s, mass_g))
    for k in range(1, len(out)):
        dt = out[k][0] - out[k - 1][0]
        if abs(dt - sample_s) > grid_tolerance * sample_s:
            raise AnalysisError(
                "samples %d and %d are %.3f s apart, not the sample period %.3f s "
                "(a missed or repeated balance reading?)" % (k - 1, k, dt, sample_s)
            )
    return out


def flows(samples, sample_s=DEFAULT_SAMPLE_S, density=DEFAULT_DENSITY_G_ML, grid_tolerance=0.2):
    """Flow Q_i (mL/h) of each sample interval; ``len(samples) - 1`` values."""
    pts = _check_samples(samples, sample_s, grid_tolerance)
    if density <= 0:
        raise AnalysisError("density must be positive")
    return [
        3600.0 * (pts[i][1] - pts[i - 1][1]) / (density * (pts[i][0] - pts[i - 1][0]))
        for i in range(1, len(pts))
    ]


def startup_curve(samples, sample_s=DEFAULT_SAMPLE_S, density=DEFAULT_DENSITY_G_ML,
                  grid_tolerance=0.2):
    """The start-up curve: ``{"t_min": [...], "flow_ml_h": [...]}``, time from the first sample
    to the end of each interval."""
    pts = _check_samples(samples, sample_s, grid_tolerance)
    q = flows(pts, sample_s, density, grid_tolerance)
    t0 = pts[0][0]
    return {"t_min": [(pts[i][0] - t0) / 60.0 for i in range(1, len(pts))], "flow_ml_h": q}


# --------------------------------------------------------------------------------------------
# analysis period

ANALYSIS_RULES = ("auto", "second-hour", "second-half", "after-first-hour")


def analysis_period(samples, analysis="auto", sample_s=DEFAULT_SAMPLE_S):
    """Which part of the run is analysed, as ``{"start_s", "end_s", "rule"}`` (times relative
    to the first sample).

    ``analysis`` is one of:

    - ``"auto"`` (default): ``"second-hour"`` when the run lasts at least 120 min, otherwise
      ``"second-half"``;
    - ``"second-hour"``: 60 to 120 min (the standard's analysis period of a 2 h run; a longer
      run is analysed on its second hour only);
    - ``"second-half"``: from the first sample at or after half the run to the end;
    - ``"after-first-hour"``: 60 min to the end (long low-rate runs with stretched windows);
    - a pair ``(start_s, end_s)``.
    """
    t0 = float(samples[0][0])
    dur = float(samples[-1][0]) - t0
    eps = 1e-6 * max(1.0, sample_s)
    if isinstance(analysis, (tuple, list)):
        if len(analysis) != 2:
            raise AnalysisError("analysis period must be (start_s, end_s)")
        start, end = float(analysis[0]), float(analysis[1])
        rule = "explicit"
    else:
        rule = analysis or "auto"
        if rule not in ANALYSIS_RULES:
            raise AnalysisError("unknown analysis period %r (use one of %s or (start_s, end_s))"
                                % (analysis, ", ".join(ANALYSIS_RULES)))
        if rule == "auto":
            rule = "second-hour" if dur >= 7200 - eps else "second-half"
        if rule == "second-hour":
            if dur < 7200 - eps:
                raise AnalysisError("the run lasts %.1f min: too short for a second hour"
                                    % (dur / 60))
            start, end = 3600.0, 7200.0
        elif rule == "after-first-hour":
            if dur <= 3600 + eps:
                raise AnalysisError("the run lasts %.1f min: nothing after the first hour"
                                    % (dur / 60))
            start, end = 3600.0, dur
        else:  # second-half: from the first grid point at or after half the run
            start = math.ceil(dur / 2.0 / sample_s - 1e-9) * sample_s
            end = dur
    if not (0 - eps <= start < end <= dur + eps):
        raise AnalysisError("analysis period %.1f..%.1f s is not inside the run (0..%.1f s)"
                            % (start, end, dur))
    return {"start_s": tidy(start), "end_s": tidy(end), "rule": rule}


# --------------------------------------------------------------------------------------------
# whole-cycle averaging


def cycle_span(pulse_s, sample_s=DEFAULT_SAMPLE_S, cycle_tolerance=0.02, max_span_cycles=10,
               max_span_s=600):
    """The averaging span for a pulse period: ``{"span_samples", "span_cycles",
    "residual_cycles"}`` (see the module docstring)."""
    if pulse_s <= 0:
        raise AnalysisError("pulse period must be positive")
    ratio = sample_s / pulse_s  # pulse periods per sample
    n_max = max(1, int(max(max_span_cycles * pulse_s, max_span_s) / sample_s + 1e-9))
    best = None
    for n in range(1, n_max + 1):
        cycles = n * ratio
        c = max(1, int(cycles + 0.5))
        resid = abs(cycles - c)
        if resid <= cycle_tolerance + 1e-12:
            best = (n, c, resid)
            break
        if best is None or resid < best[2] - 1e-12:
            best = (n, c, resid)
    n, c, resid = best
    return {"span_samples": n, "span_cycles": c, "residual_cycles": resid}


def _window_samples(window_min, sample_s, pulse_s):
    """Samples per window, whole pulse cycles when ``pulse_s`` is given."""
    p_s = window_min * 60.0
    if pulse_s is None:
        m = int(p_s / sample_s + 0.5)
        return max(1, m), None
    k = max(1, int(p_s / pulse_s + 0.5))
    m = max(1, int(k * pulse_s / sample_s + 0.5))
    return m, k


# --------------------------------------------------------------------------------------------
# trumpet


def window_errors(flow_list, rate, m):
    """``E_p,k`` (%) of every position of an ``m``-flow window sliding by one flow."""
    if rate <= 0:
        raise AnalysisError("set rate must be positive")
    n = len(flow_list)
    if m < 1 or m > n:
        return []
    out = []
    acc = sum(flow_list[:m])
    out.append(100.0 * (acc / m - rate) / rate)
    for k in range(1, n - m + 1):
        acc += flow_list[k + m - 1] - flow_list[k - 1]
        out.append(100.0 * (acc / m - rate) / rate)
    return out


def analyse(samples, rate_ml_h, sample_s=DEFAULT_SAMPLE_S, density=DEFAULT_DENSITY_G_ML,
            windows_min=STANDARD_WINDOWS_MIN, extra_windows_min=None, analysis="auto",
            pulse_period_s=None, cycle_averaging=None, cycle_min_ratio=0.1,
            cycle_tolerance=0.02, max_span_cycles=10, max_span_s=600, span_samples=None,
            grid_tolerance=0.2):
    """Start-up curve, trumpet curve and overall error of one run.

    ``samples``: ``[(t_s, mass_g), ...]`` on a grid of ``sample_s``; ``rate_ml_h``: the set
    rate. ``extra_windows_min`` are appended to ``windows_min`` (e.g. from
    :func:`scaled_windows_min`). ``pulse_period_s``: seconds per delivery pulse, if known;
    ``cycle_averaging``: None = decide from ``cycle_min_ratio``, True/False to force (True needs
    ``pulse_period_s``).

    Returns a dict: ``rate_ml_h, sample_s, density_g_ml, n_samples, duration_s, startup,
    analysis, cycle, windows_min, trumpet (one row per window), ep_max, ep_min (lists in window
    order, None where a window does not fit), overall_error_pct, mean_flow_ml_h, n_flows``.
    """
    pts = _check_samples(samples, sample_s, grid_tolerance)
    if rate_ml_h <= 0:
        raise AnalysisError("set rate must be positive")
    wins = [tidy(w) for w in windows_min] + [tidy(w) for w in (extra_windows_min or [])]
    for w in wins:
        if not w > 0:
            raise AnalysisError("observation windows must be positive, got %r" % (w,))

    t0 = pts[0][0]
    rel = [(t - t0, w) for t, w in pts]
    startup = startup_curve(pts, sample_s, density, grid_tolerance)
    period = analysis_period(rel, analysis, sample_s)
    eps = 0.25 * sample_s  # a real bench's timing jitter stays well inside this
    # sample indices bounding the analysis period
    idx = [i for i, (t, _) in enumerate(rel) if period["start_s"] - eps <= t <= period["end_s"] + eps]
    if len(idx) < 2:
        raise AnalysisError("fewer than two samples in the analysis period")
    i_first, i_last = idx[0], idx[-1]

    if cycle_averaging is None:
        use_cycles = pulse_period_s is not None and pulse_period_s >= cycle_min_ratio * sample_s
    else:
        use_cycles = bool(cycle_averaging)
        if use_cycles and pulse_period_s is None:
            raise AnalysisError("whole-cycle averaging needs the pulse period")
    if use_cycles:
        if span_samples:  # forced by the caller
            cycles = span_samples * sample_s / pulse_period_s
            c = max(1, int(cycles + 0.5))
            span = {"span_samples": int(span_samples), "span_cycles": c,
                    "residual_cycles": abs(cycles - c)}
        else:
            span = cycle_span(pulse_period_s, sample_s, cycle_tolerance, max_span_cycles,
                              max_span_s)
        n = span["span_samples"]
    else:
        span = None
        n = 1

    # flows used by the windows: one per sample interval of the period, each over the last n
    # samples (reaching back before the period start when the run has those samples)
    used = []
    used_t = []
    for i in range(max(i_first + 1, n), i_last + 1):
        dt = rel[i][0] - rel[i - n][0]
        used.append(3600.0 * (rel[i][1] - rel[i - n][1]) / (density * dt))
        used_t.append(rel[i][0])
    if not used:
        raise AnalysisError("the analysis period (%d samples) is shorter than the averaging "
                            "span (%d samples)" % (i_last - i_first + 1, n))

    rows = []
    ep_max = []
    ep_min = []
    for w in wins:
        m, k = _window_samples(w, sample_s, pulse_period_s if use_cycles else None)
        errs = window_errors(used, rate_ml_h, m)
        row = {"window_min": w, "window_eff_min": tidy(m * sample_s / 60.0), "samples": m,
               "cycles": k, "positions": len(errs), "artefact_bound_pct": None}
        if pulse_period_s:
            pulses = m * sample_s / pulse_period_s
            if not use_cycles:
                row["artefact_bound_pct"] = 100.0 / pulses
            elif span["residual_cycles"] > 1e-9:
                row["artefact_bound_pct"] = 100.0 / (n * pulses)
            else:
                row["artefact_bound_pct"] = 0.0
        if errs:
            hi = max(range(len(errs)), key=errs.__getitem__)
            lo = min(range(len(errs)), key=errs.__getitem__)
            row["ep_max"] = errs[hi]
            row["ep_min"] = errs[lo]
            # start of the flow data behind the extreme windows, minutes from the first sample
            row["t_max_min"] = (used_t[hi] - n * sample_s) / 60.0
            row["t_min_min"] = (used_t[lo] - n * sample_s) / 60.0
        else:
            row["ep_max"] = None
            row["ep_min"] = None
            row["note"] = ("window of %d samples does not fit in the %d flows of the analysis "
                           "period" % (m, len(used)))
        rows.append(row)
        ep_max.append(row["ep_max"])
        ep_min.append(row["ep_min"])

    if use_cycles:
        # the start-up curve over whole cycles too (None until the first full span)
        startup["flow_avg_ml_h"] = [
            None if i < n else
            3600.0 * (rel[i][1] - rel[i - n][1]) / (density * (rel[i][0] - rel[i - n][0]))
            for i in range(1, len(rel))]

    q_mean = sum(used) / len(used)
    cycle = {"applied": use_cycles, "pulse_period_s": pulse_period_s,
             "span_samples": n, "span_cycles": span["span_cycles"] if span else None,
             "residual_cycles": span["residual_cycles"] if span else None,
             "span_min": tidy(n * sample_s / 60.0)}
    return {
        "rate_ml_h": rate_ml_h,
        "sample_s": sample_s,
        "density_g_ml": density,
        "n_samples": len(pts),
        "duration_s": rel[-1][0],
        "startup": startup,
        "analysis": period,
        "cycle": cycle,
        "n_flows": len(used),
        "windows_min": wins,
        "trumpet": rows,
        "ep_max": ep_max,
        "ep_min": ep_min,
        "mean_flow_ml_h": q_mean,
        "overall_error_pct": 100.0 * (q_mean - rate_ml_h) / rate_ml_h,
    }


# --------------------------------------------------------------------------------------------
# bolus series


def bolus_stats(delivered, target):
    """Statistics of a bolus series weighed one by one.

    ``delivered``: the volume of each bolus; ``target``: the programmed volume, same unit.
    Returns ``n, target, delivered, errors_pct, mean_error_pct, sd_pct`` (sample SD, None for
    one bolus), ``largest_over_pct`` (the largest signed error, the worst over-delivery) and
    ``largest_under_pct`` (the smallest signed error, the worst under-delivery).
    """
    if target <= 0:
        raise AnalysisError("bolus target must be positive")
    if not delivered:
        raise AnalysisError("empty bolus series")
    errs = [100.0 * (v - target) / target for v in delivered]
    n = len(errs)
    mean = sum(errs) / n
    sd = None
    if n > 1:
        sd = (sum((e - mean) ** 2 for e in errs) / (n - 1)) ** 0.5
    return {
        "n": n,
        "target": target,
        "delivered": list(delivered),
        "errors_pct": errs,
        "mean_error_pct": mean,
        "sd_pct": sd,
        "largest_over_pct": max(errs),
        "largest_under_pct": min(errs),
    }
