"""``pumprig bench`` and ``pumprig calibrate``: the arguments, the run, what is printed.

:func:`add_parser` adds both commands to the CLI's subparsers; each sets ``func=run``.
"""

import argparse
import json
import re
import sys

import pumprig.bench.limits as limits
import pumprig.bench.procedures as procedures
import pumprig.bench.report as report
import pumprig.bench.rig as benchrig
from pumprig import argtypes, trumpet, units
from pumprig.errors import PumprigError
from pumprig.folders import make_folder
from pumprig.progress import Phases

# The package's modules are imported by their full names, never `from pumprig.bench import
# x`: that would make this module depend on the package's __init__, which imports this one.


def _read(reader, text, field, what, **kw):
    """One quantity through :mod:`pumprig.units`, positive; a failure is one ``pumprig:``
    line (a PumprigError, not a ValueError that argparse would turn into "invalid value")."""
    try:
        value = reader(text, field=field, **kw)
    except units.UnitError as e:
        raise PumprigError(str(e)) from None
    if value <= 0:
        raise PumprigError("%s: %r: the %s must be positive" % (field, text, what))
    return value


def parse_rate(text, field="--rate"):
    """``"0.5 mL/day"`` -> 500000 (nL/day); nL, uL or mL per day, h or min. A bare number is
    refused with a hint (issue 14: ``--rate 1`` silently meant 1 nL/day)."""
    return _read(units.volume_rate_nl_day, text, field, "rate")


def parse_volume(text, field="--bolus-volume"):
    """``"10 uL"`` -> 10000 (nL); nL, uL or mL. A bare number is refused."""
    return _read(units.volume_nl, text, field, "volume")


def parse_duration(text, field="duration"):
    """``"2h"``, ``"90 min"``, ``"1h30m"``, ``"30s"`` -> seconds (float). A bare number is
    refused."""
    return _read(units.duration_s, text, field, "duration", whole=False)


def _duration(field):
    def parse(text):
        return parse_duration(text, field)

    parse.__name__ = "duration"
    return parse


def parse_windows(text):
    """``"60,120,240"`` -> [60, 120, 240] (minutes)."""
    try:
        out = [trumpet.tidy(float(x)) for x in text.split(",") if x.strip()]
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
        return (parse_duration(a, "--analysis"), parse_duration(b, "--analysis"))
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
    p.add_argument("--density", type=argtypes.positive, default=procedures.DEFAULT_DENSITY_G_ML,
                   help="liquid density in g/mL (0.998, water at 20 C)")
    p.add_argument("--settle", type=_duration("--settle"), default=10.0,
                   help="wait after a step move before a stable weighing (10s)")
    p.add_argument("--pump-error", type=parse_pump_error, default=None, metavar="PCT",
                   help="virtual rig only: make its mechanism deliver PCT %% off the nominal "
                        "step (e.g. -3%% for a slow pump); stays set on a running rig")
    p.add_argument("--sim-state", default=None, metavar="DIR",
                   help="with --port sim: keep the throwaway rig's board files (calibration) "
                        "and keys in DIR, so a later --port sim run continues from them")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--operator", default=None, metavar="NAME",
                   help="who ran the test, for the report's record")
    p.add_argument("--limits", default=None, metavar="FILE",
                   help="acceptance limits from a TOML file (name = [low, high] in %%); see "
                        "docs/bench.md for the names and defaults")
    p.add_argument("--limit", type=limits.parse_option, action="append", default=[],
                   metavar="NAME=LOW,HIGH",
                   help="one acceptance limit in %%, e.g. rate_error_pct=-5,5 (a side may be "
                        "empty); repeatable, wins over --limits")
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
                   help='rate with its unit, e.g. "0.5 mL/day", "20 uL/h" or "500000 nL/day" (a '
                        "bare number is refused)")
    p.add_argument("--duration", type=_duration("--duration"), default=7200.0,
                   help="run length with its unit (2h)")
    p.add_argument("--sample", type=_duration("--sample"), default=30.0,
                   help="sample period with its unit (30s)")
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
    c.add_argument("--out", default=None, help="write CSV, JSON and HTML here")
    c.set_defaults(func=run, bench_command="calibrate")
    return p, c


def make_bench_rig(args):
    """Open the rig the arguments name (see :func:`pumprig.bench.rig.open_rig`)."""
    return benchrig.open_rig(getattr(args, "port", None), timeout=getattr(args, "timeout", 2.0),
                             sim_state=getattr(args, "sim_state", None),
                             pump_error=getattr(args, "pump_error", None))


def _balance_identity(bal):
    """The balance's model and serial number (MT-SICS I2, I4); None for what it does not say
    (some balances answer ES): the run goes on, the record says "not recorded"."""
    from pumprig.errors import BalanceError

    out = {}
    for key, ask in (("model", bal.model), ("serial", bal.serial_number)):
        try:
            out[key] = ask()
        except BalanceError:
            out[key] = None
    return out


def run(args, out=None, err=None):
    """Run ``pumprig bench`` or ``pumprig calibrate``; returns the exit status. Failures are
    PumprigError (the CLI prints ``pumprig: message`` and exits 1)."""
    out = out or sys.stdout
    err = err or sys.stderr
    show = not args.json or (hasattr(err, "isatty") and err.isatty())
    with Phases(stream=err, enabled=show) as progress:  # tqdm; nothing off a terminal
        return _run(args, out, err, progress)


def _run(args, out, err, progress):
    from pumprig import __version__
    from pumprig.balance import Balance

    command = args.bench_command
    if command == "bench" and args.boluses and not args.bolus_volume:
        raise PumprigError("--boluses needs --bolus-volume")
    limit_set = limits.resolve(args.limits, args.limit)
    if args.out:
        make_folder(args.out, "--out")  # before the run: a bench run is hours long

    started = report.utc_now()
    rig = make_bench_rig(args)
    try:
        rig_info = rig.describe()
        ready = getattr(rig, "ready_for_bench", None)
        if command == "bench" and ready is not None:
            ready()
        balance_port = args.balance or getattr(rig, "balance_link", None)
        if not balance_port:
            raise PumprigError("no balance: give --balance PORT (the balance's serial port)")
        with Balance(balance_port, timeout=args.balance_timeout,
                     baudrate=args.balance_baud) as bal:
            balance_info = _balance_identity(bal)
            if command == "calibrate":
                res = procedures.calibrate(rig, bal, steps=args.steps, repeats=args.repeats,
                                           density=args.density, settle_s=args.settle,
                                           apply=not args.dry_run, max_sd_pct=args.max_sd,
                                           progress=progress)
            else:
                extra = list(args.windows or [])
                if args.windows_scale:
                    extra += trumpet.scaled_windows_min(args.windows_scale)
                res = procedures.bench_run(rig, bal, args.rate, args.duration,
                                           sample_s=args.sample, progress=progress,
                                           boluses=args.boluses,
                                           bolus_volume_nl=args.bolus_volume,
                                           density=args.density,
                                           extra_windows_min=extra or None,
                                           analysis=args.analysis, settle_s=args.settle)
    finally:
        rig.close()

    res["record"] = report.make_record(
        started, report.utc_now(), operator=args.operator, rig=rig_info,
        rig_port=getattr(args, "port", None), balance=balance_info, balance_port=balance_port,
        version=__version__, revision=report.git_revision())
    res["limits"] = limits.relevant(limit_set, command)
    if command == "calibrate":
        res["acceptance"] = limits.evaluate_calibration(res, limit_set)
        paths = report.write_calibration_report(res, args.out) if args.out else None
        if args.json:
            out.write(json.dumps(dict(res, files=paths), sort_keys=True) + "\n")
            return 0
        for k, r in enumerate(res["runs"]):
            out.write("  run %d: %d steps, %d ug, %.3f nL, %.1f pL/step\n"
                      % (k + 1, res["steps"], r["mass_ug"], r["volume_nl"], r["step_pl"]))
        out.write("calibration %d pL/step (was %d, %+.2f %%), SD %.3f %%, range %.3f %%, %s\n"
                  % (res["step_pl"], res["previous_step_pl"], res["change_pct"] or 0.0,
                     res["sd_pct"], res["range_pct"],
                     "stored" if res["applied"] else "not stored"))
        _write_verdict(out, res["acceptance"])
        if paths:
            out.write("report: %s\n" % paths["html"])
        return 0

    res["acceptance"] = limits.evaluate_bench(res, limit_set)
    paths = report.write_report(res, args.out) if args.out else None
    if args.json:
        out.write(json.dumps({"results": res, "files": paths}, sort_keys=True) + "\n")
        return 0
    cyc = res["cycle"]
    out.write("rate %s = %d nL/day (%.6g mL/h), %d pL/step: one step every %.2f s; %d samples "
              "every %g s\n" % (report.human_rate(res["rate_nl_day"]), res["rate_nl_day"],
                                res["rate_ml_h"], res["step_pl"], res["pulse_period_s"],
                                res["n_samples"], res["sample_s"]))
    if cyc["applied"]:
        out.write("whole-cycle averaging over %d samples = %s pulse cycles (residual %.3f)\n"
                  % (cyc["span_samples"], cyc["span_cycles"], cyc["residual_cycles"]))
    out.write("overall error A %+.3f %% over %s (%g-%g min, %d samples)\n"
              % (res["overall_error_pct"], res["analysis"]["rule"],
                 res["analysis"]["start_s"] / 60.0, res["analysis"]["end_s"] / 60.0,
                 res["n_samples"]))
    for r in res["trumpet"]:
        out.write("  P = %6s min  Ep(max) %8s %%  Ep(min) %8s %%\n"
                  % (r["window_min"], report.fmt(r["ep_max"], "%+.3f"),
                     report.fmt(r["ep_min"], "%+.3f")))
    if res["boluses"]:
        b = res["boluses"]
        out.write("boluses: mean %+.3f %%, largest over %+.3f %%, largest under %+.3f %%\n"
                  % (b["mean_error_pct"], b["largest_over_pct"], b["largest_under_pct"]))
    _write_verdict(out, res["acceptance"])
    if paths:
        out.write("report: %s\n" % paths["html"])
    return 0


def _write_verdict(out, acc):
    failed = [c for c in acc["checks"] if c["result"] == limits.FAIL]
    out.write("acceptance: %s" % acc["verdict"])
    if failed:
        shown = ["%s %s outside %s" % (c["what"], report.fmt(c["measured"], "%+.3f %%"),
                                       c["limit"]) for c in failed[:3]]
        if len(failed) > 3:
            shown.append("%d more" % (len(failed) - 3))
        out.write(" (%s)" % "; ".join(shown))
    out.write("\n")
