"""A small HTML report for the HIL suites (pytest-html is not a dependency): one index.html
with each test's status, duration, failure, attached event log and instrument readings, and a
PNG of instrument steps against time for the tests that recorded a trace."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

_ORDER = {"failed": 0, "error": 1, "passed": 3, "skipped": 4, "xfailed": 5, "xpassed": 2}
_COLOUR = {"failed": "#c62828", "error": "#ad1457", "passed": "#2e7d32", "skipped": "#757575",
           "xfailed": "#6d4c41", "xpassed": "#ef6c00"}


def plot_trace(trace, path, title, target):
    """trace: [(t_s, steps_fwd, label)]. Writes a PNG of steps against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = trace[0][0]
    span = trace[-1][0] - t0
    scale, unit = (3600.0, "h") if span > 7200 else (1.0, "s")
    xs = [(t - t0) / scale for t, _, _ in trace]
    ys = [s - trace[0][1] for _, s, _ in trace]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.step(xs, ys, where="post", color="tab:blue")
    for x, (_, s, label) in zip(xs, trace, strict=True):
        if label and label != "start":
            ax.annotate(label, (x, s - trace[0][1]), fontsize=7, rotation=45)
    ax.set_xlabel("time since start (%s, %s clock)" % (unit, "virtual" if target == "sim"
                                                        else "host"))
    ax.set_ylabel("STEP pulses counted")
    ax.set_title(title[-70:], fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


class HtmlReport:
    def __init__(self, out_dir: Path):
        self.out = Path(out_dir)
        self.tests = {}  # nodeid -> dict

    def add(self, rep):
        t = self.tests.setdefault(rep.nodeid, {"outcome": "passed", "duration": 0.0,
                                               "details": [], "props": {}})
        t["duration"] += getattr(rep, "duration", 0.0) or 0.0
        xfail = hasattr(rep, "wasxfail")
        if rep.when == "call":
            if xfail:
                t["outcome"] = "xfailed" if rep.skipped else "xpassed"
            elif rep.failed:
                t["outcome"] = "failed"
            elif rep.skipped:
                t["outcome"] = "skipped"
        elif rep.failed:
            t["outcome"] = "error"
        elif rep.skipped and rep.when == "setup":
            t["outcome"] = "xfailed" if xfail else "skipped"
        if rep.longrepr is not None and (rep.failed or rep.skipped):
            if rep.skipped and isinstance(rep.longrepr, tuple):
                text = rep.longrepr[2]
            else:
                text = getattr(rep, "longreprtext", None) or str(rep.longrepr)
            t["details"].append((rep.when + (": skipped" if rep.skipped else ": failure"), text))
        for name, content in rep.sections:
            if content and ("pumprig" in name or "instrument" in name or rep.failed):
                t["details"].append((name, content))
        for k, v in rep.user_properties:
            t["props"][k] = v

    def write(self):
        self.out.mkdir(parents=True, exist_ok=True)
        rows = sorted(self.tests.items(), key=lambda kv: (_ORDER.get(kv[1]["outcome"], 9), kv[0]))
        counts = {}
        for _, t in rows:
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        e = html.escape
        parts = ["<!doctype html><meta charset=utf-8><title>pumprig HIL report</title>",
                 "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:2px 8px;"
                 "text-align:left;vertical-align:top}pre{background:#f5f5f5;padding:6px;"
                 "max-height:24em;overflow:auto;font-size:12px}details{margin:4px 0}"
                 ".o{color:white;padding:1px 6px;border-radius:3px}</style>",
                 "<h1>pumprig HIL report</h1>",
                 "<p>%s &mdash; %s</p>" % (
                     e(dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
                     e(", ".join("%d %s" % (n, k) for k, n in sorted(counts.items())))),
                 "<table><tr><th>status</th><th>test</th><th>duration</th></tr>"]
        for nodeid, t in rows:
            col = _COLOUR.get(t["outcome"], "#000")
            parts.append("<tr><td><span class=o style='background:%s'>%s</span></td>"
                         "<td><a href='#%s'>%s</a></td><td>%.2f s</td></tr>"
                         % (col, t["outcome"], e(_anchor(nodeid)), e(nodeid), t["duration"]))
        parts.append("</table>")
        for nodeid, t in rows:
            parts.append("<h3 id='%s'>%s <small>(%s, %.2f s)</small></h3>"
                         % (e(_anchor(nodeid)), e(nodeid), t["outcome"], t["duration"]))
            plot = t["props"].get("hil_plot")
            if plot:
                parts.append("<img src='%s' alt='steps against time'>" % e(plot))
            for title, text in t["details"]:
                opened = " open" if "failure" in title else ""
                parts.append("<details%s><summary>%s</summary><pre>%s</pre></details>"
                             % (opened, e(title), e(text)))
        (self.out / "index.html").write_text("\n".join(parts) + "\n")
        return self.out / "index.html"


def _anchor(nodeid):
    return "t-" + "".join(c if c.isalnum() else "-" for c in nodeid)
