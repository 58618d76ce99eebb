"""The bench report: ``samples.csv``, ``results.json``, the plots and ``report.html``."""

import base64
import csv
import html
import json
import os


def fmt(x, spec="%.2f"):
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
           fmt(r["ep_max"]), fmt(r["ep_min"]))
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

