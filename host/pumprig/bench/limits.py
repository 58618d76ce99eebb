"""Acceptance limits for ``pumprig bench`` and ``pumprig calibrate``, and the PASS/FAIL verdict.

A limit is a closed range ``(low, high)`` in percent; either side may be None (open). The
defaults and where their figures come from are in docs/bench.md ("Acceptance limits"). A lab
replaces them with its device's declared accuracy: a TOML file (``--limits FILE``, flat keys,
``rate_error_pct = [-5.0, 5.0]``) and/or ``--limit NAME=LOW,HIGH`` on the command line (the
command line wins).

The evaluators take plain results (what :mod:`pumprig.bench.procedures` returns) and return
``{"verdict": "PASS" | "FAIL", "checks": [...]}``; each check is ``{name, what, measured,
low, high, result}`` with ``result`` PASS, FAIL or NOT EVALUATED (e.g. a window longer than
the analysis period). The verdict is FAIL when any check fails, else PASS.
"""

import difflib
import math

from pumprig.errors import PumprigError

# (low, high) percent. Sources: docs/bench.md, "Acceptance limits".
BENCH_DEFAULTS = {
    "rate_error_pct": (-15.0, 14.5),  # A, the error of the mean flow
    "trumpet_error_pct": (-15.0, 14.5),  # every Ep(min) and Ep(max) of every window that fits
    "bolus_mean_error_pct": (-15.0, 14.5),  # mean error of the bolus series
    "bolus_single_error_pct": (-15.0, 14.5),  # the largest single over- and under-delivery
}
CALIBRATE_DEFAULTS = {
    "calib_sd_pct": (None, 0.5),  # spread of the runs (sample SD, % of the mean)
    "calib_change_pct": (-15.0, 14.5),  # new step volume against the one stored before
}
DEFAULTS = dict(BENCH_DEFAULTS, **CALIBRATE_DEFAULTS)

PASS = "PASS"
FAIL = "FAIL"
NOT_EVALUATED = "NOT EVALUATED"


def _unknown(name):
    hint = difflib.get_close_matches(name, DEFAULTS, n=1)
    return PumprigError("unknown acceptance limit %r%s (known: %s)"
                        % (name, " (did you mean %r?)" % hint[0] if hint else "",
                           ", ".join(sorted(DEFAULTS))))


def _side(value, name):
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PumprigError("acceptance limit %s: %r is not a number (percent)"
                           % (name, value)) from None
    if not math.isfinite(v):
        raise PumprigError("acceptance limit %s: %r is not a finite number" % (name, value))
    return v


def _pair(name, value):
    if name not in DEFAULTS:
        raise _unknown(name)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise PumprigError("acceptance limit %s: give [low, high] in percent, got %r"
                           % (name, value))
    low, high = _side(value[0], name), _side(value[1], name)
    if low is None and high is None:
        raise PumprigError("acceptance limit %s: give at least one side" % name)
    if low is not None and high is not None and low > high:
        raise PumprigError("acceptance limit %s: low %g is above high %g" % (name, low, high))
    return (low, high)


def parse_option(text):
    """``"rate_error_pct=-5,5"`` -> ``("rate_error_pct", (-5.0, 5.0))``; an empty side is
    open (``"calib_sd_pct=,0.2"``). Raises PumprigError with a hint."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or "," not in value:
        raise PumprigError("cannot read the limit %r: write NAME=LOW,HIGH in percent, e.g. "
                           "rate_error_pct=-5,5 (a side may be empty)" % text)
    low, _, high = value.partition(",")
    return name, _pair(name, [low.strip(), high.strip()])


def load_file(path):
    """The limits in a TOML file (flat keys, ``name = [low, high]``; ``"none"`` or an absent
    key leaves a side or a limit at its default). Returns ``{name: (low, high)}``."""
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise PumprigError("cannot read the limits file %s: %s" % (path, e.strerror)) from None
    except tomllib.TOMLDecodeError as e:
        raise PumprigError("the limits file %s is not valid TOML: %s" % (path, e)) from None
    out = {}
    for name, value in data.items():
        if isinstance(value, list):
            value = [None if isinstance(x, str) and x.lower() == "none" else x for x in value]
        out[name] = _pair(name, value)
    return out


def resolve(file=None, overrides=()):
    """The defaults, then the file's limits, then each ``(name, (low, high))`` override."""
    limits = dict(DEFAULTS)
    if file:
        limits.update(load_file(file))
    for name, pair in overrides:
        limits[name] = pair
    return limits


def describe(pair):
    """``(-15.0, 14.5)`` -> ``"-15 to +14.5 %"``; an open side reads "at most"/"at least"."""
    low, high = pair
    if low is None:
        return "at most %+g %%" % high
    if high is None:
        return "at least %+g %%" % low
    return "%+g to %+g %%" % (low, high)


def _check(name, what, measured, pair):
    low, high = pair
    if measured is None:
        result = NOT_EVALUATED
    elif (low is not None and measured < low) or (high is not None and measured > high):
        result = FAIL
    else:
        result = PASS
    return {"name": name, "what": what, "measured": measured, "low": low, "high": high,
            "limit": describe(pair), "result": result}


def _verdict(checks):
    return {"verdict": FAIL if any(c["result"] == FAIL for c in checks) else PASS,
            "checks": checks}


def evaluate_bench(results, limits):
    """Checks for a flow run: A, every window's Ep(max) and Ep(min), the boluses."""
    checks = [_check("rate_error_pct", "overall error A", results["overall_error_pct"],
                     limits["rate_error_pct"])]
    band = limits["trumpet_error_pct"]
    for row in results["trumpet"]:
        p = row["window_min"]
        checks.append(_check("trumpet_error_pct", "Ep(max), P = %s min" % p, row["ep_max"], band))
        checks.append(_check("trumpet_error_pct", "Ep(min), P = %s min" % p, row["ep_min"], band))
    b = results.get("boluses")
    if b:
        checks.append(_check("bolus_mean_error_pct", "bolus mean error", b["mean_error_pct"],
                             limits["bolus_mean_error_pct"]))
        single = limits["bolus_single_error_pct"]
        checks.append(_check("bolus_single_error_pct", "largest bolus over-delivery",
                             b["largest_over_pct"], single))
        checks.append(_check("bolus_single_error_pct", "largest bolus under-delivery",
                             b["largest_under_pct"], single))
    return _verdict(checks)


def evaluate_calibration(results, limits):
    """Checks for a calibration: the spread of the runs and the change from the old value."""
    return _verdict([
        _check("calib_sd_pct", "spread of the runs (SD)", results["sd_pct"],
               limits["calib_sd_pct"]),
        _check("calib_change_pct", "change from the stored calibration", results["change_pct"],
               limits["calib_change_pct"]),
    ])


def relevant(limits, command):
    """The limits one command uses (``bench`` or ``calibrate``), for the report."""
    keys = BENCH_DEFAULTS if command == "bench" else CALIBRATE_DEFAULTS
    return {k: list(limits[k]) for k in keys}
