"""A run's report for people: the summary lines and the plot."""

from __future__ import annotations

import os
from pathlib import Path

from .. import units
from ..errors import PumprigError

# pumpcore.app: STALL_CONFIRM_MS, STALL_RETRIES
_STALL_RULE = ("the firmware raises STALL once a stall seen at a segment's end or an hourly "
               "check lasts 15 min, or after 3 stalled segments in a row")


def _day(s) -> str:
    return "-" if s is None else f"day {s / 86_400:.2f}"


def _h_min(s: int) -> str:
    """4260 -> '1 h 11 min', 3060 -> '51 min', 20 -> '20 s' (to the minute from 1 min)."""
    if s < 60:
        return f"{s} s"
    m = (s + 30) // 60
    return f"{m // 60} h {m % 60} min" if m >= 60 else f"{m} min"


def fault_line(f: dict) -> str:
    """'stall at day 30.00 for 2 h: alarm STALL after 58 min' or '...: 1 stalled segment, no
    alarm (the rule)'."""
    what = f["kind"] if f["kind"] != "battery" else f"battery {f['mv'] / 1000:g} V"
    text = f"{what} at {_day(f['at_s'])}"
    if f.get("for_s"):
        text += f" for {units.format_duration_s(f['for_s'])}"
    said = []
    n = f.get("stall_episodes", 0)
    if f["kind"] == "stall" and (n or not f.get("alarms")):
        said.append(f"{n} stalled segment{'s' if n != 1 else ''}")
    if f.get("restarts"):
        said.append(f"rig restarted{' x%d' % f['restarts'] if f['restarts'] > 1 else ''}")
    if f.get("alarms"):
        after = f.get("alarm_after_s")
        said.append("alarm " + ", ".join(f["alarms"])
                    + (f" after {_h_min(after)}" if after is not None else ""))
    else:
        said.append("no alarm" + (f" ({_STALL_RULE})" if f["kind"] == "stall" else ""))
    return text + ": " + ", ".join(said)


def format_summary(r: dict) -> list[str]:
    lines = [
        f"plan CRC {r['plan_crc']} ({r['drug']}), {r['days']} days from {r['start']}"
        + (f" ({r['tz']})" if r.get("tz") else ""),
        f"delivered      {r['delivered_ml']:.4f} mL measured by the rig "
        f"(ideal {r['ideal_ml']:.4f} mL, {r['delivered_steps']} steps)",
        f"account        {r['account_steps']} steps, uncertain {r['uncertain_ml']:.4f} mL: "
        f"account - uncertain <= measured <= account "
        f"{'holds' if r['account_ok'] else 'FAILS'}",
        f"step error     at most {r['max_step_error']:.3f} step(s) over the run"
        f" (checked to {_day(r['error_checked_until_s'])})",
        f"LOW            {_day(r['low_at_s'])}"
        + (f" at {r['low_volume_ml']:.3f} mL left" if r["low_volume_ml"] is not None else ""),
        f"EMPTY          {_day(r['empty_at_s'])}"
        + (f" at {r['empty_volume_ml']:.3f} mL left" if r["empty_volume_ml"] is not None else ""),
        f"battery        {r['battery_mv']} mV ({r['battery_state']})",
        f"boluses        {r['boluses']['given']} given, {r['boluses']['refused']} refused",
    ]
    for ref in r["boluses"]["refusals"][:10]:
        lines.append(f"  refused at {ref['at_s'] / 3600:.2f} h: {ref['reason']} {ref['message']}")
    for f in r.get("faults") or []:
        lines.append(f"fault          {fault_line(f)}")
    if r["alarms"]:
        lines.append("alarms")
        for a in r["alarms"]:
            lines.append(f"  {a['kind']:<14} {'critical' if a['critical'] else 'non-critical':<12}"
                         f" {_day(a['at_s'])}")
    lines.append(f"wall time      {r['wall_s']:.2f} s "
                 f"({r['days'] * 86_400 / max(r['wall_s'], 1e-9):,.0f} x real time)")
    return lines


def check_plot_path(path) -> None:
    """Refuse, before any run, a plot file that cannot be written: an image format matplotlib
    does not write, a folder that does not exist or cannot be written to."""
    p = Path(path)
    from matplotlib.figure import Figure

    kinds = Figure().canvas.get_supported_filetypes()
    ext = p.suffix.lower().lstrip(".")
    if ext not in kinds:
        hint = units.did_you_mean(ext, kinds, cutoff=0.5) if ext else ""
        raise PumprigError(f"--plot {path}: {'.' + ext if ext else 'no'} image format{hint}; "
                           f"use .png, .pdf or .svg")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise PumprigError(f"--plot {path}: no folder {parent}")
    if not os.access(parent, os.W_OK):
        raise PumprigError(f"--plot {path}: cannot write in {parent}")
    if p.is_dir():
        raise PumprigError(f"--plot {path}: is a folder; give a file name like run.png")


def plot(r: dict, path) -> str:
    """Four panels over the days of the run: cumulative delivery (ideal over measured, bolus
    and fault markers), measured minus ideal, the reservoir, the battery. 150 dpi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [0] + [p["day"] for p in r["per_day"]]
    cum, ideal, diff, c, i = [0.0], [0.0], [0.0], 0, 0
    for p in r["per_day"]:
        c += p["volume_nl"]
        i += p["ideal_nl"]
        cum.append(c / 1e6)
        ideal.append(i / 1e6)
        diff.append((c - i) / 1e3)  # uL
    res = [r["fill_nl"] / 1e6] + [
        (p["reservoir_nl"] / 1e6 if p["reservoir_nl"] is not None else float("nan"))
        for p in r["per_day"]]
    fig, (a1, a2, a3, a4) = plt.subplots(
        4, 1, figsize=(9, 11), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2, 1.5]})
    a1.plot(days, cum, color="tab:blue", lw=4, alpha=0.45, label="measured by the rig",
            zorder=2)
    a1.plot(days, ideal, color="black", lw=1.2, ls="--", label="ideal (plan)", zorder=3)
    a1.set_ylabel("cumulative delivery (mL)")
    a1.set_title(f"{r['drug']} plan (CRC {r['plan_crc']}): {r['days']} days; "
                 f"max step error {r['max_step_error']:.3f} steps of {r['step_pl'] / 1e6:g} µL")
    a2.axhline(0, color="black", lw=0.8)
    a2.plot(days, diff, color="tab:blue", marker=".", ms=3)
    step_ul = r["step_pl"] / 1e6
    a2.axhspan(-step_ul, step_ul, color="tab:green", alpha=0.15, label="±1 step")
    a2.set_ylabel("measured − ideal (µL)")
    a2.set_title("measured minus ideal, cumulative, at the end of each day (µL)", fontsize=9)
    a2.legend(loc="upper left", fontsize=8)
    a3.plot(days, res, color="tab:green", label="reservoir (firmware)")
    a3.axhline(r.get("low_ml", 2.0), color="orange", ls=":", label="LOW level")
    a3.axhline(r.get("empty_ml", 1.0), color="red", ls=":", label="EMPTY level")
    a3.set_ylabel("reservoir (mL)")
    a4.plot(days[1:], [p["battery_mv"] / 1000 for p in r["per_day"]], color="tab:purple")
    a4.set_ylabel("battery (V)")
    a4.set_xlabel("time since programming (days)")

    bolus_days = [s / 86_400 for s in r.get("bolus_times_s") or []]
    if bolus_days:
        ys = [_interp(days, ideal, x) for x in bolus_days]
        a1.plot(bolus_days, ys, "v", color="tab:orange", ms=6, label="bolus", zorder=4)
    for k, f in enumerate(r.get("faults") or []):
        x0 = f["at_s"] / 86_400
        x1 = x0 + (f.get("for_s") or 0) / 86_400
        label = f"fault: {f['kind']}"
        for ax in (a1, a2, a3, a4):
            if x1 > x0:
                ax.axvspan(x0, x1, color="tab:red", alpha=0.2, label=label if ax is a1 else None)
            else:
                ax.axvline(x0, color="tab:red", ls="-.", lw=1.2,
                           label=label if ax is a1 else None)
        a1.annotate(label, (x1, a1.get_ylim()[1] * (0.95 - 0.06 * k)), color="tab:red",
                    fontsize=8, ha="left", va="top")
    for a in r["alarms"]:
        x = a["at_s"] / 86_400
        for ax in (a1, a3):
            ax.axvline(x, color="red" if a["critical"] else "orange", alpha=0.4)
        top = max((v for v in res if v == v), default=1)
        a3.annotate(a["kind"], (x, top * 0.35), rotation=90, fontsize=8, ha="right")
    a1.legend(loc="upper left", fontsize=8)
    a3.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return str(path)


def _interp(xs, ys, x):
    for k in range(1, len(xs)):
        if xs[k] >= x:
            x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
            return y0 + (y1 - y0) * (x - x0) / ((x1 - x0) or 1)
    return ys[-1]
