"""What a lab files from ``pumprig bench`` and ``pumprig calibrate``: CSV, JSON, plots, HTML.

Every report carries the same record (:func:`make_record`: date, operator, rig, balance,
software) and the acceptance verdict (:mod:`pumprig.bench.limits`). The functions here take
plain results and write files; nothing is printed.

Files of a flow run (:func:`write_report`): ``samples.csv`` (every reading), ``summary.csv``
(the record, the results and each acceptance check, one ``section,item,value,limit,result``
row each), ``results.json``, ``startup.png``, ``trumpet.png``, ``report.html``. Of a
calibration (:func:`write_calibration_report`): ``runs.csv``, ``summary.csv``,
``results.json``, ``report.html``.
"""

import base64
import csv
import datetime as dt
import html
import json
import os
import subprocess

DPI = 150  # plots people read and print

RECORD_FIELDS = [  # (key, label) in the order the reports show them
    ("started_utc", "started (UTC)"),
    ("finished_utc", "finished (UTC)"),
    ("operator", "operator"),
    ("rig_uid", "rig uid"),
    ("board", "board"),
    ("firmware", "firmware version"),
    ("plan_crc", "plan CRC"),
    ("rig_port", "rig port"),
    ("virtual_rig", "virtual rig"),
    ("balance_model", "balance model"),
    ("balance_serial", "balance serial"),
    ("balance_port", "balance port"),
    ("package_version", "pumprig version"),
    ("git_revision", "git revision"),
]


def fmt(x, spec="%.2f"):
    return "-" if x is None else spec % x


def utc_now():
    """The time now, ISO 8601 UTC to the second (``2026-12-04T18:20:00Z``)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_revision(path=None):
    """The git revision of the pumprig checkout holding this package (``abc1234``, with
    ``-dirty`` when tracked files have uncommitted changes), or None when it is not one: an
    installed wheel (even inside a lab's own repository, whose revision would be a wrong
    record), or no git."""
    where = path or os.path.dirname(os.path.abspath(__file__))

    def git(*argv):
        return subprocess.run(["git", "-C", where, *argv], capture_output=True, text=True,
                              timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0:
            return None
        root = top.stdout.strip()
        if not os.path.isfile(os.path.join(root, "host", "pumprig", "__init__.py")):
            return None
        rev = git("rev-parse", "--short=12", "HEAD")
        if rev.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def make_record(started_utc, finished_utc, operator=None, rig=None, rig_port=None,
                balance=None, balance_port=None, version=None, revision=None):
    """The record a lab files with a result. ``rig``: the rig's ``describe()``;
    ``balance``: ``{"model", "serial"}`` (None when the balance did not say)."""
    rig = rig or {}
    balance = balance or {}
    return {
        "started_utc": started_utc,
        "finished_utc": finished_utc,
        "operator": operator,
        "rig_uid": rig.get("uid"),
        "board": rig.get("board"),
        "firmware": rig.get("firmware"),
        "plan_crc": rig.get("plan_crc"),
        "rig_port": rig_port,
        "virtual_rig": rig.get("virtual"),
        "balance_model": balance.get("model"),
        "balance_serial": balance.get("serial"),
        "balance_port": balance_port,
        "package_version": version,
        "git_revision": revision,
    }


def _text(v):
    if v is None:
        return "not recorded"
    if v is True:
        return "yes"
    if v is False:
        return "no"
    return str(v)


# --------------------------------------------------------------------------------------------
# human units


def human_rate(rate_nl_day):
    """``1000000`` -> ``"1 mL/day"``; ``500000`` -> ``"0.5 mL/day"``; ``2400`` -> ``"2.4 uL/day"``
    (plot and report text: never ``1e+06 nL/day``)."""
    r = float(rate_nl_day)
    if r >= 10_000:
        return "%s mL/day" % _num(r / 1e6)
    if r >= 10:
        return "%s \u00b5L/day" % _num(r / 1e3)
    return "%s nL/day" % _num(r)


def _num(x):
    text = "%.4f" % x
    return text.rstrip("0").rstrip(".") if "." in text else text


def flow_unit(rate_ml_h):
    """``(label, factor from mL/h)``: uL/h below 1 mL/h (implant rates), else mL/h."""
    if rate_ml_h < 1.0:
        return "\u00b5L/h", 1000.0
    return "mL/h", 1.0


# --------------------------------------------------------------------------------------------
# plots


def _figure(height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, height))
    FigureCanvasAgg(fig)
    return fig


def _zoom(ax, values):
    """Fit the y axis to the measured values and 0 (the ideal), with a margin, so a 0.1 %
    error stays readable inside a wide acceptance band (the band's shading fills what is in
    view; its edges show once the values come near them)."""
    vals = [v for v in values if v is not None] + [0.0]
    lo, hi = min(vals), max(vals)
    pad = max(0.1, 0.25 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)


def startup_figure(results, band=None):
    """The start-up curve (flow against time, the set rate as the ideal) over a panel of the
    measured minus the ideal in % of the set rate, with the acceptance band ``(low, high)``
    (percent) in both. Returns the matplotlib Figure."""
    fig = _figure(6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    st = results["startup"]
    rate = results["rate_ml_h"]
    unit, k = flow_unit(rate)
    averaged = "flow_avg_ml_h" in st
    a = results["analysis"]
    for ax in (top, bottom):
        ax.axvspan(a["start_s"] / 60.0, a["end_s"] / 60.0, color="0.93", zorder=0,
                   label="analysis period" if ax is top else None)
    top.plot(st["t_min"], [q * k for q in st["flow_ml_h"]], lw=0.6,
             color="0.65" if averaged else "C0", label="Q_i, per %g s sample" % results["sample_s"],
             zorder=2)
    err_t, err = st["t_min"], [100.0 * (q - rate) / rate for q in st["flow_ml_h"]]
    if averaged:
        pts = [(t, q) for t, q in zip(st["t_min"], st["flow_avg_ml_h"], strict=True)
               if q is not None]
        top.plot([p[0] for p in pts], [p[1] * k for p in pts], lw=1.5, color="C0", zorder=3,
                 label="over %d whole pulse cycles" % results["cycle"]["span_cycles"])
        err_t = [p[0] for p in pts]
        err = [100.0 * (p[1] - rate) / rate for p in pts]
    low, high = band if band else (None, None)
    if band:
        top.axhspan(rate * k * (1 + (low if low is not None else -100) / 100.0),
                    rate * k * (1 + (high if high is not None else 100) / 100.0),
                    color="C2", alpha=0.12, zorder=1, label="acceptance band (A)")
        bottom.axhspan(low if low is not None else -100.0, high if high is not None else 100.0,
                       color="C2", alpha=0.12, zorder=1,
                       label="acceptance band %s" % _plain_limit(band))
    # the ideal last and on top, so the measured flow cannot hide it
    top.axhline(rate * k, color="C3", ls="--", lw=1.4, zorder=5,
                label="ideal: set rate %s" % human_rate(results["rate_nl_day"]))
    bottom.axhline(0, color="C3", ls="--", lw=1.4, zorder=5, label="ideal (0 %)")
    bottom.plot(err_t, err, lw=1.0, color="C0", zorder=3, label="measured \u2212 ideal")
    _zoom(bottom, err)
    top.set_ylabel("flow (%s)" % unit)
    top.set_title("Start-up curve at %s (%.4g %s)" % (human_rate(results["rate_nl_day"]),
                                                       rate * k, unit))
    top.legend(loc="best", fontsize="small")
    bottom.set_xlabel("time from start (min)")
    bottom.set_ylabel("measured \u2212 ideal\n(% of set rate)")
    bottom.set_title("Measured minus ideal flow", fontsize="medium")
    bottom.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def trumpet_figure(results, band=None):
    """Ep(max) and Ep(min) against the window P, the ideal (0 %), A, and the acceptance band
    ``(low, high)`` (percent). Returns the matplotlib Figure."""
    fig = _figure(4.8)
    ax = fig.add_subplot(1, 1, 1)
    pts = sorted((r["window_min"], r["ep_max"], r["ep_min"]) for r in results["trumpet"]
                 if r["ep_max"] is not None)  # added windows come after the standard ones
    if band:
        low, high = band
        ax.axhspan(low if low is not None else -100.0, high if high is not None else 100.0,
                   color="C2", alpha=0.12, zorder=0, label="acceptance band %s"
                   % _plain_limit(band))
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C1", zorder=3,
                label="Ep(max)")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], "s-", color="C0", zorder=3,
                label="Ep(min)")
    ax.axhline(results["overall_error_pct"], color="k", ls=":", lw=1.2, zorder=4,
               label="A = %.2f %%" % results["overall_error_pct"])
    ax.axhline(0, color="C3", ls="--", lw=1.4, zorder=5, label="ideal (0 %)")
    _zoom(ax, [p[1] for p in pts] + [p[2] for p in pts] + [results["overall_error_pct"]])
    a = results["analysis"]
    ax.set_xlabel("observation window P (min)")
    ax.set_ylabel("error Ep (% of set rate)")
    ax.set_title("Trumpet curve at %s, analysis %g\u2013%g min"
                 % (human_rate(results["rate_nl_day"]), a["start_s"] / 60.0, a["end_s"] / 60.0))
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def _plain_limit(band):
    low, high = band
    return "(%s to %s %%)" % ("-" if low is None else "%+g" % low,
                              "-" if high is None else "%+g" % high)


def save_figure(fig, path):
    fig.savefig(path, dpi=DPI)


# --------------------------------------------------------------------------------------------
# CSV and HTML


def _summary_rows(results, items):
    rows = [["section", "item", "value", "limit", "result"]]
    record = results.get("record") or {}
    for key, label in RECORD_FIELDS:
        rows.append(["record", label, _text(record.get(key)), "", ""])
    for label, value in items:
        rows.append(["result", label, value, "", ""])
    acc = results.get("acceptance")
    if acc:
        for c in acc["checks"]:
            rows.append(["acceptance", c["what"], fmt(c["measured"], "%.4f"), c["limit"],
                         c["result"]])
        rows.append(["acceptance", "verdict", "", "", acc["verdict"]])
    return rows


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def _write_json(path, results):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")


def _img(path):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return '<img alt="%s" src="data:image/png;base64,%s">' % (
        html.escape(os.path.basename(path)), data)


_STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #aaa;padding:.2em .6em;
text-align:left}img{max-width:100%}.PASS{color:#060;font-weight:bold}
.FAIL{color:#b00;font-weight:bold}.verdict{font-size:1.4em}"""


def _kv_table(pairs):
    e = html.escape
    return "<table>%s</table>" % "".join("<tr><th>%s</th><td>%s</td></tr>" % (e(k), e(v))
                                         for k, v in pairs)


def _acceptance_html(acc):
    e = html.escape
    if not acc:
        return ""
    rows = "".join(
        '<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td class="%s">%s</td></tr>'
        % (e(c["what"]), e(c["name"]), fmt(c["measured"], "%.3f"), e(c["limit"]),
           e(c["result"].replace(" ", "_")), e(c["result"]))
        for c in acc["checks"])
    return ('<h2>Acceptance</h2><p class="verdict">verdict: <span class="%s">%s</span></p>'
            "<table><tr><th>check</th><th>limit name</th><th>measured (%%)</th><th>limit</th>"
            "<th>result</th></tr>%s</table>" % (e(acc["verdict"]), e(acc["verdict"]), rows))


def _page(title, record, acc, body):
    e = html.escape
    rec = _kv_table([(label, _text((record or {}).get(key))) for key, label in RECORD_FIELDS])
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title>"
            "<style>%s</style></head><body>\n<h1>%s</h1>\n<h2>Record</h2>%s\n%s\n%s\n"
            "</body></html>\n" % (e(title), _STYLE, e(title), rec, _acceptance_html(acc), body))


def _bench_items(results):
    cyc = results["cycle"]
    a = results["analysis"]
    unit, k = flow_unit(results["rate_ml_h"])
    items = [
        ("set rate", "%s (%d nL/day, %.4g %s)" % (human_rate(results["rate_nl_day"]),
                                                  results["rate_nl_day"],
                                                  results["rate_ml_h"] * k, unit)),
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
        ("mean flow", "%.4g %s" % (results["mean_flow_ml_h"] * k, unit)),
        ("overall error A", "%.3f %%" % results["overall_error_pct"]),
    ]
    for r in results["trumpet"]:
        items.append(("Ep(max) / Ep(min), P = %s min" % r["window_min"],
                      "%s / %s %%" % (fmt(r["ep_max"], "%.3f"), fmt(r["ep_min"], "%.3f"))))
    b = results.get("boluses")
    if b:
        items += [
            ("bolus series", "%d x %g nL (%d steps)" % (b["n"], b["target"], b["steps"])),
            ("bolus mean error", "%.3f %%" % b["mean_error_pct"]),
            ("largest over / under", "%.3f %% / %.3f %%" % (b["largest_over_pct"],
                                                          b["largest_under_pct"])),
        ]
    return items


def _bands(results):
    lim = results.get("limits") or {}
    rate = lim.get("rate_error_pct")
    trumpet = lim.get("trumpet_error_pct")
    return (tuple(rate) if rate else None), (tuple(trumpet) if trumpet else None)


def _report_paths(out_dir, **own):
    """``out_dir`` created; the paths of every report's summary.csv, results.json and
    report.html, and of the report's ``own`` files, by key."""
    os.makedirs(out_dir, exist_ok=True)
    names = dict(summary_csv="summary.csv", json="results.json", html="report.html", **own)
    return {k: os.path.join(out_dir, v) for k, v in names.items()}


def write_report(results, out_dir):
    """Write a flow run's ``samples.csv``, ``summary.csv``, ``results.json``,
    ``startup.png``, ``trumpet.png`` and ``report.html`` (both plots embedded) into
    ``out_dir`` (created). ``results`` may carry ``record``, ``limits`` and ``acceptance``.
    Returns the paths by key."""
    paths = _report_paths(out_dir, csv="samples.csv", startup_png="startup.png",
                          trumpet_png="trumpet.png")
    flows = results["startup"]["flow_ml_h"]
    rows = [["index", "t_s", "mass_ug", "flow_ml_h"]]
    for i, (t, m) in enumerate(results["samples"]):
        rows.append([i, "%.3f" % t, m, "" if i == 0 else "%.9g" % flows[i - 1]])
    _write_csv(paths["csv"], rows)
    items = _bench_items(results)
    _write_csv(paths["summary_csv"], _summary_rows(results, items))
    _write_json(paths["json"], results)
    rate_band, trumpet_band = _bands(results)
    save_figure(startup_figure(results, rate_band), paths["startup_png"])
    save_figure(trumpet_figure(results, trumpet_band), paths["trumpet_png"])
    e = html.escape
    rows = "".join(
        "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
        % (e(str(r["window_min"])), e(str(r["window_eff_min"])), r["positions"],
           fmt(r["ep_max"]), fmt(r["ep_min"]), fmt(r.get("artefact_bound_pct")))
        for r in results["trumpet"])
    body = ("<h2>Results</h2>%s\n<h2>Start-up curve</h2>%s\n<h2>Trumpet curve</h2>%s\n"
            "<table><tr><th>window P (min)</th><th>effective (min)</th><th>positions</th>"
            "<th>Ep(max) %%</th><th>Ep(min) %%</th><th>step artefact bound %%</th></tr>%s"
            "</table>\n<p>Raw samples: samples.csv; this page as rows: summary.csv; all numbers: "
            "results.json.</p>" % (_kv_table(items), _img(paths["startup_png"]),
                                   _img(paths["trumpet_png"]), rows))
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(_page("Gravimetric bench test: flow", results.get("record"),
                      results.get("acceptance"), body))
    return paths


def _calibration_items(res):
    return [
        ("runs", "%d x %d steps" % (res["repeats"], res["steps"])),
        ("density", "%g g/mL" % res["density_g_ml"]),
        ("step volume (mean)", "%.1f pL/step" % res["step_pl_mean"]),
        ("calibration", "%d pL/step (%s)" % (res["step_pl"],
                                             "stored" if res["applied"] else "not stored")),
        ("previous calibration", "%d pL/step" % res["previous_step_pl"]),
        ("change", "%s %%" % fmt(res["change_pct"], "%+.3f")),
        ("spread (SD)", "%.4f %%" % res["sd_pct"]),
        ("spread (range)", "%.4f %%" % res["range_pct"]),
    ]


def write_calibration_report(results, out_dir):
    """Write a calibration's ``runs.csv``, ``summary.csv``, ``results.json`` and
    ``report.html`` into ``out_dir`` (created). Returns the paths by key."""
    paths = _report_paths(out_dir, csv="runs.csv")
    rows = [["run", "steps", "mass_ug", "volume_nl", "step_pl"]]
    for k, r in enumerate(results["runs"]):
        rows.append([k + 1, results["steps"], r["mass_ug"], "%.3f" % r["volume_nl"],
                     "%.1f" % r["step_pl"]])
    _write_csv(paths["csv"], rows)
    items = _calibration_items(results)
    _write_csv(paths["summary_csv"], _summary_rows(results, items))
    _write_json(paths["json"], results)
    runs = "".join("<tr><td>%d</td><td>%d</td><td>%.3f</td><td>%.1f</td></tr>"
                   % (k + 1, r["mass_ug"], r["volume_nl"], r["step_pl"])
                   for k, r in enumerate(results["runs"]))
    body = ("<h2>Results</h2>%s\n<h2>Runs</h2><table><tr><th>run</th><th>mass (\u00b5g)</th>"
            "<th>volume (nL)</th><th>pL/step</th></tr>%s</table>\n<p>Runs: runs.csv; this page "
            "as rows: summary.csv; all numbers: results.json.</p>"
            % (_kv_table(items), runs))
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(_page("Gravimetric bench test: step calibration", results.get("record"),
                      results.get("acceptance"), body))
    return paths
