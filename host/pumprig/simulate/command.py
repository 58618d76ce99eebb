"""`pumprig simulate`: the command line of a simulated run."""

from __future__ import annotations

import datetime as dt
import json
import sys

from ..errors import PumprigError
from ..progress import Progress
from .report import check_plot_path, format_summary, plot
from .run import simulate
from .scenario import load_bolus_file, parse_fault


def start_epoch(text: str | None) -> int:
    if text is None:
        return int(dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    from ..plans import parse_date

    return parse_date(text, "--start")


def fill_for_run(fill_text: str | None, plan_path, meta: dict) -> int:
    """The starting fill in nL (--fill, else the plan file's reservoir.fill, else 20 mL),
    checked with the plan file's scenario refills against the virtual rig's reservoir before
    the run: the firmware's own refusal came mid-run, in its terms ("volume_nl must be ...")."""
    from ..plans import board_limits, parse_fill_nl

    cap = board_limits("sim")["reservoir_nl"]
    fill = parse_fill_nl(fill_text, "--fill") if fill_text else meta.get("fill_nl", 20_000_000)
    said = [("--fill" if fill_text else f"{plan_path}: reservoir.fill", fill)]
    for i, ev in enumerate((meta.get("scenario") or {}).get("events", [])):
        if "refill_nl" in ev:
            said.append((f"{plan_path}: scenario.events[{i}].refill", ev["refill_nl"]))
    for where, nl in said:
        if nl > cap:
            raise PumprigError(f"{where}: {nl / 1e6:g} mL is more than the virtual rig's "
                               f"{cap / 1e6:g} mL reservoir")
    return fill


def add_parser(sub):
    sp = sub.add_parser(
        "simulate", help="run a plan for days or months on a virtual rig, in seconds",
        description="Run the real firmware on a virtual rig with its clock warped, and report "
                    "what the rig measured against the plan's ideal.")
    sp.add_argument("plan", metavar="PLAN.toml")
    sp.add_argument("--days", type=int, default=90, help="simulated days (default 90)")
    sp.add_argument("--fill", help='starting fill, e.g. "20 mL" (default: the plan file\'s, '
                                   'else the reservoir size)')
    sp.add_argument("--start", help="start date and time, UTC unless --tz (default 2027-01-01)")
    sp.add_argument("--tz", help="time zone of the pump's clock, e.g. Europe/Paris: flex "
                                 "schedules follow its daylight-saving changes")
    sp.add_argument("--boluses", metavar="FILE",
                    help="patient bolus requests, one time per line (e.g. 36h, 2d)")
    sp.add_argument("--fault", action="append", default=[], metavar="KIND@TIME[:DUR]",
                    help="inject a fault: stall@30d:2h, occlusion@12h:30min, "
                         "battery=3.2V@60d, power@45d (repeatable)")
    sp.add_argument("--plot", metavar="FILE.png",
                    help="draw delivery (ideal, measured, their difference), reservoir, battery")
    sp.set_defaults(func=cmd_simulate)


def cmd_simulate(args):
    from ..plans import load_plan_file

    # everything the user gave is checked before the run, which can take a while
    if args.plot:
        check_plot_path(args.plot)
    plan, meta = load_plan_file(args.plan)
    if args.days < 1 or args.days > 3650:
        raise PumprigError("--days must be 1..3650")
    fill = fill_for_run(args.fill, args.plan, meta)
    boluses = load_bolus_file(args.boluses) if args.boluses else []
    faults = [parse_fault(f) for f in args.fault]
    if args.tz:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(args.tz)
        except Exception:
            raise PumprigError(f"--tz {args.tz!r}: unknown time zone") from None
    with Progress("simulating", args.days, unit="day") as show:
        r = simulate(plan, args.days, fill, start_epoch(args.start), args.tz,
                     meta.get("scenario"), boluses, faults, progress=show)
    if args.plot:
        plot(r, args.plot)
    if args.json:
        sys.stdout.write(json.dumps(r) + "\n")
    else:
        for line in format_summary(r):
            sys.stdout.write(line + "\n")
        if args.plot:
            sys.stdout.write(f"plot           {args.plot}\n")
    return 0
