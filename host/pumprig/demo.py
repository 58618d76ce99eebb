"""`pumprig demo` (what `make demo` runs): the whole job on a virtual rig, start to finish.

1. start a blank virtual rig (the real MicroPython interpreter on a pseudo-terminal);
2. flash the firmware onto it with `pumprig flash` (mpy-cross + stock mpremote);
3. program the example baclofen plan P1 over the protocol;
4. simulate 90 days of therapy with the clock warped, measuring delivery on the rig;
5. print a summary and write the plot and the JSON report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .errors import PumprigError
from .firmware import examples_dir
from .folders import make_folder

DEFAULT_PLAN = examples_dir() / "p1-baclofen-continuous.toml"


_stream = sys.stdout  # stderr with --json, so that stdout holds the JSON report alone


def _say(text=""):
    _stream.write(text + "\n")
    _stream.flush()


def run_demo(out_dir, plan_path=DEFAULT_PLAN, days=90):
    from . import flash as flashmod
    from . import plans, simulate
    from .client import Client
    from .progress import Progress
    from .virtual.rig import VirtualRig

    out = out_folder(out_dir)
    home = out / "home"
    home.mkdir(exist_ok=True)
    os.environ["PUMPRIG_HOME"] = str(home)  # the demo rig's keys stay in the demo folder
    plan, meta = plans.load_plan_file(plan_path)
    fill = simulate.fill_for_run(None, plan_path, meta)

    _say("1. starting a blank virtual rig (MicroPython unix port on a pseudo-terminal)")
    t0 = time.monotonic()
    rig = VirtualRig(state=str(out / "rig-state"), blank=True, warp=True, name="demo")
    rig.start()
    try:
        _say(f"   serial port {rig.link}  (balance {rig.balance_link})")
        _say("2. flashing the firmware with pumprig flash")
        rep = flashmod.flash(rig.link, progress=lambda m: _say("   " + m))
        _say(f"   {len(rep['copied'])} files copied ({'.mpy' if rep['mpy'] else '.py'})")
        with Client(rig.link, role="clinician", timeout=5.0) as c:
            info = c.info
        _say(f"   firmware {info.get('firmware')} on board {info.get('board')} "
             f"(uid {info.get('uid')}), {info.get('step_pl', 0) / 1e6:g} uL per step")
        _say(f"3. programming {Path(plan_path).name}")
        for line in plans.describe(plan):
            _say("   " + line)
        _say(f"4. simulating {days} days with a {fill / 1e6:g} mL fill")
        start_epoch = simulate.start_epoch(None)
        with Progress("   simulating", days, unit="day", stream=_stream) as show:
            report = simulate.simulate(plan, days, fill, start_epoch,
                                       scenario=meta.get("scenario"), rig=rig, progress=show)
    finally:
        rig.stop()
    _say("5. summary")
    for line in simulate.format_summary(report):
        _say("   " + line)
    png = out / "demo-delivery.png"
    simulate.plot(report, png)
    js = out / "demo-report.json"
    js.write_text(json.dumps(report, indent=1))
    _say(f"   plot    {png}")
    _say(f"   report  {js}")
    _say(f"done in {time.monotonic() - t0:.1f} s")
    return report


def out_folder(path) -> Path:
    """The demo's output folder, created if missing (pumprig.folders)."""
    return make_folder(path, "--out")


def add_parser(sub):
    sp = sub.add_parser("demo", help="start a virtual rig, flash it, program P1, simulate 90 "
                                     "days and plot (what `make demo` runs)")
    sp.add_argument("--out", default="out", help="folder for the plot, report and rig state")
    sp.add_argument("--plan", default=str(DEFAULT_PLAN), help="plan file (default: P1)")
    sp.add_argument("--days", type=int, default=90)
    sp.set_defaults(func=cmd_demo)


def cmd_demo(args):
    if args.days < 1:
        raise PumprigError("--days must be at least 1")
    out_folder(args.out)  # before anything starts
    global _stream
    _stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    report = run_demo(args.out, args.plan, args.days)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(report) + "\n")
    return 0
