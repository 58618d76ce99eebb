"""The HIL report's own drawing: a PNG per test of the STEP pulses counted against time, with
the test's ideal and tolerance band when it recorded them (HilRig.expect).

The report page itself is pytest-html's (with pytest-metadata's environment section): the
plugin attaches each plot to its test as a pytest-html extra. The home-made HTML page that was
here is gone: pytest-html shows everything it showed (status, duration, failure, the event log
and instrument readings as report sections, the plots)."""

from __future__ import annotations

from pathlib import Path

DPI = 150


def plot_trace(trace, path, title, target, band=()):
    """trace: [(t_s, steps_fwd, label)]; band: [(t_s, ideal_steps, tolerance_steps)] in the
    same counter origin. Writes a PNG of steps against time at DPI dots per inch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = trace[0][0]
    c0 = trace[0][1]
    span = max([trace[-1][0]] + [b[0] for b in band]) - t0
    scale, unit = (3600.0, "h") if span > 7200 else (1.0, "s")
    xs = [(t - t0) / scale for t, _, _ in trace]
    ys = [s - c0 for _, s, _ in trace]
    if band:
        # the band around the ideal, and below it the error panel where a band of a step or
        # two stays visible however many steps the run counted
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.4, 4.8), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
        bx = [(t - t0) / scale for t, _, _ in band]
        ideal = [i - c0 for _, i, _ in band]
        tol = [w for _, _, w in band]
        ax.fill_between(bx, [i - w for i, w in zip(ideal, tol, strict=True)],
                        [i + w for i, w in zip(ideal, tol, strict=True)],
                        color="tab:green", alpha=0.25, linewidth=0, label="tolerance")
        ax.plot(bx, ideal, color="tab:green", linestyle="--", linewidth=1, label="ideal")
        err = [_count_at(trace, t) - i for (t, i, _) in band]
        ax2.fill_between(bx, [-w for w in tol], tol, color="tab:green", alpha=0.25,
                         linewidth=0, label="tolerance")
        ax2.axhline(0, color="tab:green", linestyle="--", linewidth=1)
        ax2.plot(bx, err, color="tab:blue", marker=".", linewidth=1, label="counted - ideal")
        ax2.set_ylabel("error (steps)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7, loc="upper left")
        xaxis = ax2
    else:
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        xaxis = ax
    ax.step(xs, ys, where="post", color="tab:blue", label="counted")
    for x, (_, s, label) in zip(xs, trace, strict=True):
        if label and label != "start":
            ax.annotate(label, (x, s - c0), fontsize=7, rotation=45)
    xaxis.set_xlabel("time since start (%s, %s clock)" % (unit, "virtual" if target == "sim"
                                                        else "host"))
    ax.set_ylabel("STEP pulses counted (steps)")
    ax.set_title(title[-70:], fontsize=8)
    ax.grid(alpha=0.3)
    if band:
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _count_at(trace, t):
    """The counter reading the trace holds at time t (the last sample at or before it)."""
    v = trace[0][1]
    for ts, s, _ in trace:
        if ts > t:
            break
        v = s
    return v
