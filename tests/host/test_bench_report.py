"""bench_run, calibrate and write_report on a simulated pump and the virtual balance (pty)."""

import argparse
import csv
import io
import json
import os

import pytest
from pumprig.balance import Balance
from pumprig.bench import command, limits, procedures, report
from pumprig.bench.rig import BenchError, BenchRig
from pumprig.errors import PumprigError
from pumprig.virtual.balance import VirtualBalance, serve_on_pty

DENSITY = 0.998
RATE_NL_DAY = 500_000  # 0.5 mL/day: one 0.25 uL step every 43.2 s


class SimRig(BenchRig):
    """An honest stepper pump in virtual time.

    The "firmware" times its steps from the calibration it holds (``step_pl``): at a rate, one
    step every ``step_pl * 86.4 / rate`` s from the start; the mechanism really moves
    ``true_step_pl`` per step. Raw step moves run at 50 steps/s. The time is in integer
    microseconds so nothing drifts.
    """

    MOVE_HZ = 50

    def __init__(self, step_pl=250_000, true_step_pl=242_500):
        self.step_pl = step_pl
        self.true_step_pl = true_step_pl
        self.t_us = 1_000_000_000  # the clock does not start at zero
        self.done_steps = 0  # steps of finished deliveries
        self.rate_start_us = None
        self.interval_us = None
        self.calls = []

    # the BenchRig interface
    def now_s(self):
        return self.t_us / 1e6

    def wait_until_s(self, t_s):
        self.t_us = max(self.t_us, int(round(t_s * 1e6)))

    def start_rate(self, rate_nl_day):
        self.calls.append(("start_rate", rate_nl_day))
        self.rate_start_us = self.t_us
        self.interval_us = self.step_pl * 86_400_000 // rate_nl_day  # pL*86.4/(nL/day) in us

    def stop(self):
        self.done_steps += self._rate_steps()
        self.rate_start_us = None
        self.calls.append(("stop",))

    def run_steps(self, steps):
        assert self.rate_start_us is None, "steps while a rate runs"
        self.t_us += steps * 1_000_000 // self.MOVE_HZ
        self.done_steps += steps

    def get_step_pl(self):
        return self.step_pl

    def set_step_pl(self, step_pl):
        self.calls.append(("set_step_pl", step_pl))
        self.step_pl = step_pl

    # the physics
    def _rate_steps(self):
        if self.rate_start_us is None:
            return 0
        return (self.t_us - self.rate_start_us) // self.interval_us

    def mass_ug(self):
        steps = self.done_steps + self._rate_steps()
        return int(steps * self.true_step_pl * DENSITY / 1000)  # nL * g/mL = ug


@pytest.fixture
def bench_setup():
    rig = SimRig()
    vb = VirtualBalance(seed=11, noise_ug=2)
    path, stop = serve_on_pty(rig.mass_ug, vb, now_ms=lambda: rig.t_us // 1000)
    bal = Balance(path, timeout=2.0)
    yield rig, bal, path
    bal.close()
    stop()


def test_slow_pump_reads_slow_then_calibration_corrects_it(bench_setup, tmp_path):
    rig, bal, _ = bench_setup
    seen = []
    res = procedures.bench_run(rig, bal, RATE_NL_DAY, 7200, progress=lambda *a: seen.append(a),
                          boluses=5, bolus_volume_nl=10_000)
    assert seen[0] == ("run", 1, 240) and seen[239] == ("run", 240, 240)
    assert seen[-1] == ("bolus", 5, 5)
    assert res["n_samples"] == 241 and len(res["samples"]) == 241
    assert res["windows_min"] == [2, 5, 11, 19, 31]
    assert res["pulse_period_s"] == pytest.approx(43.2)
    assert res["cycle"]["applied"] and res["cycle"]["span_samples"] == 13
    # the pump moves 242500 of the 250000 pL it is timed for: -3 %
    assert res["overall_error_pct"] == pytest.approx(-3.0, abs=0.15)
    for p, hi, lo in zip(res["windows_min"], res["ep_max"], res["ep_min"], strict=True):
        assert hi >= lo
        tol = 3.0 if p == 2 else 1.0  # the residual pulse artefact of a 43.2 s step on 2 min
        assert -3 - tol < lo and hi < -3 + tol
    # boluses: 10 uL = 40 steps of 250000 pL, each really 9.7 uL: -3 %
    b = res["boluses"]
    assert b["steps"] == 40 and b["n"] == 5
    assert b["mean_error_pct"] == pytest.approx(-3.0, abs=0.1)
    assert b["largest_under_pct"] <= b["mean_error_pct"] <= b["largest_over_pct"]
    assert rig.calls[:2] == [("start_rate", RATE_NL_DAY), ("stop",)]

    cal = procedures.calibrate(rig, bal, steps=400, repeats=5)
    assert cal["previous_step_pl"] == 250_000
    assert cal["step_pl"] == pytest.approx(242_500, rel=0.001)
    assert rig.step_pl == cal["step_pl"] and cal["applied"]
    assert cal["change_pct"] == pytest.approx(-3.0, abs=0.1)
    assert 0 <= cal["sd_pct"] < 0.05 and 0 <= cal["range_pct"] < 0.1
    assert len(cal["runs"]) == 5

    after = procedures.bench_run(rig, bal, RATE_NL_DAY, 7200, extra_windows_min=[60])
    assert abs(after["overall_error_pct"]) < 0.5
    assert after["windows_min"] == [2, 5, 11, 19, 31, 60]
    for row in after["trumpet"]:
        # within the noise plus the documented residual of whole-cycle averaging
        # (41.9 s steps, 7-sample span: about 5 % on 2 min, 2 % on 5 min, < 1 % beyond)
        tol = 0.5 + row["artefact_bound_pct"]
        assert -tol < row["ep_min"] <= row["ep_max"] < tol
    assert after["trumpet"][2]["artefact_bound_pct"] < 1

    paths = report.write_report(after, str(tmp_path / "report"))
    for key in ("csv", "json", "startup_png", "trumpet_png", "html"):
        assert os.path.getsize(paths[key]) > 0
    for key in ("startup_png", "trumpet_png"):
        with open(paths[key], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(paths["json"]) as f:
        data = json.load(f)
    assert data["windows_min"] == [2, 5, 11, 19, 31, 60]
    assert len(data["ep_max"]) == len(data["ep_min"]) == 6
    assert all(isinstance(x, float) for x in data["ep_max"] + data["ep_min"])
    assert all("ep_max" in r and "ep_min" in r for r in data["trumpet"])
    assert data["overall_error_pct"] == pytest.approx(after["overall_error_pct"])
    with open(paths["csv"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "t_s", "mass_ug", "flow_ml_h"]
    assert len(rows) == 242
    assert int(rows[-1][2]) == after["samples"][-1][1]
    with open(paths["html"]) as f:
        page = f.read()
    assert page.count("data:image/png;base64,") == 2
    assert "Ep(max)" in page and "overall error A" in page


def test_calibrate_refuses_a_dry_line(bench_setup):
    rig, bal, _ = bench_setup
    rig.true_step_pl = 0  # nothing reaches the vessel
    with pytest.raises(BenchError, match="outlet"):
        procedures.calibrate(rig, bal, steps=100, repeats=2)
    assert rig.step_pl == 250_000


def test_calibrate_max_sd_refuses_to_store(bench_setup):
    rig, bal, _ = bench_setup
    with pytest.raises(BenchError, match="not stored"):
        procedures.calibrate(rig, bal, steps=2, repeats=3, max_sd_pct=0.0)
    assert rig.step_pl == 250_000


def test_parsers():
    assert command.parse_rate("0.5 mL/day") == 500_000
    assert command.parse_rate("500000 nL/day") == 500_000
    assert command.parse_rate("20 uL/h") == 480_000
    assert command.parse_rate("0.5mL/d") == 500_000
    assert command.parse_duration("2h") == 7200
    assert command.parse_duration("1h30m") == 5400
    assert command.parse_duration("90 min") == 5400
    assert command.parse_duration("30s") == 30
    assert command.parse_volume("10 uL") == 10_000
    assert command.parse_volume("10 \u00b5L") == 10_000
    assert command.parse_analysis("1h-25h") == (3600, 90000)
    assert command.parse_windows("60,120") == [60, 120]
    for bad in (lambda: command.parse_rate("fast"), lambda: command.parse_rate("1 L/s"),
                lambda: command.parse_duration("2 fortnights"), lambda: command.parse_volume("0 uL"),
                lambda: command.parse_rate("0 mL/day")):
        with pytest.raises(PumprigError):
            bad()


def test_bare_number_rate_is_an_error_with_a_hint(capsys):
    """Finding (issue 14): `bench --rate 1` silently meant 1 nL/day. Now a bare number is a
    `pumprig:` line naming the option and showing how to write it (exit 1, no traceback)."""
    from pumprig import cli as pumprig_cli

    with pytest.raises(PumprigError, match=r"--rate: '1' has no unit; write it like '0.5 mL/day'"):
        command.parse_rate("1")
    with pytest.raises(PumprigError, match="did you mean 'mL'"):
        command.parse_rate("0.5 mk/day")
    with pytest.raises(PumprigError, match="--bolus-volume: '10' has no unit"):
        command.parse_volume("10")
    for argv, msg in ((["bench", "--port", "sim", "--rate", "1"],
                       "pumprig: --rate: '1' has no unit; write it like '0.5 mL/day'\n"),
                      (["bench", "--port", "sim", "--rate", "1 mL/day", "--duration", "2"],
                       "pumprig: --duration: '2' has no unit; write it like '90 min'\n")):
        assert pumprig_cli.main(argv) == 1
        err = capsys.readouterr().err
        assert err == msg and "Traceback" not in err


def cli(argv):
    ap = argparse.ArgumentParser(prog="pumprig")
    command.add_parser(ap.add_subparsers(dest="command"))
    return ap.parse_args(argv)


def test_bench_arguments_in_human_units():
    args = cli(["bench", "--balance", "/dev/null", "--rate", "0.5 mL/day"])
    assert args.rate == 500_000 and args.duration == 7200 and args.sample == 30


def test_cli_end_to_end(bench_setup, tmp_path, monkeypatch):
    rig, _, path = bench_setup
    monkeypatch.setattr(command, "make_bench_rig", lambda args: rig)
    out = io.StringIO()
    args = cli(["calibrate", "--balance", path, "--steps", "200", "--repeats", "3", "--json"])
    assert args.func(args, out=out) == 0
    assert json.loads(out.getvalue())["step_pl"] == pytest.approx(242_500, rel=0.001)

    out, err = io.StringIO(), io.StringIO()
    args = cli(["bench", "--balance", path, "--rate", "0.5 mL/day", "--duration", "1h",
                "--boluses", "2", "--bolus-volume", "10 uL", "--windows-scale", "2",
                "--out", str(tmp_path / "r")])
    assert args.func(args, out=out, err=err) == 0
    text = out.getvalue()
    assert "overall error A" in text and "second-half" in text and "boluses: mean" in text
    assert os.path.exists(tmp_path / "r" / "report.html")
    with open(tmp_path / "r" / "results.json") as f:
        data = json.load(f)
    assert data["windows_min"] == [2, 5, 11, 19, 31, 4, 10, 22, 38, 62]
    # a 1 h run analysed on its second half (30 min): the 31 min and longer windows do not fit
    assert data["ep_max"][4] is None and data["ep_max"][9] is None


# --------------------------------------------------------------------------------------------
# issue 14, "Reports": what a lab files (record, acceptance limits, readable plots)

RECORD = {"started_utc": "2026-12-04T10:00:00Z", "finished_utc": "2026-12-04T12:00:05Z",
          "operator": "A. Tester", "rig_uid": "00112233aabbccdd", "board": "pico",
          "firmware": "0.1.0", "plan_crc": "1a2b3c4d", "rig_port": "/dev/ttyACM0",
          "virtual_rig": False, "balance_model": "XPR2U 2.1 g", "balance_serial": "B123456",
          "balance_port": "/dev/ttyUSB0", "package_version": "0.1.0",
          "git_revision": "abcdef012345"}


@pytest.fixture
def slow_run(bench_setup):
    """A 2 h run at 0.5 mL/day of a pump 3 % slow, with 3 boluses, and its default limits."""
    rig, bal, _ = bench_setup
    res = procedures.bench_run(rig, bal, RATE_NL_DAY, 7200, boluses=3, bolus_volume_nl=10_000)
    res["limits"] = limits.relevant(limits.DEFAULTS, "bench")
    return res


def test_human_rate_never_scientific():
    """Finding (issue 14): the plot title read "1e+06 nL/day"."""
    assert report.human_rate(1_000_000) == "1 mL/day"
    assert report.human_rate(500_000) == "0.5 mL/day"
    assert report.human_rate(2_880_000) == "2.88 mL/day"
    assert report.human_rate(2_400) == "2.4 \u00b5L/day"
    assert report.human_rate(6) == "6 nL/day"


def _png_size_and_dpi(path):
    import struct

    with open(path, "rb") as f:
        data = f.read()
    w, h = struct.unpack(">II", data[16:24])
    i = data.index(b"pHYs")
    ppm_x, ppm_y, unit = struct.unpack(">IIB", data[i + 4:i + 13])
    assert unit == 1  # metres
    return w, h, ppm_x * 0.0254


def test_plots_people_read(slow_run, tmp_path):
    """Finding (issue 14): plots at 100 dpi, rate in nL/day scientific notation, the ideal
    under the measured line, no error panel, no tolerance band."""
    res = dict(slow_run, rate_nl_day=1_000_000)  # the title case of the finding
    fig = report.startup_figure(res, band=(-15.0, 14.5))
    top, bottom = fig.axes
    assert "1 mL/day" in top.get_title() and "e+" not in top.get_title()
    assert "\u00b5L/h" in top.get_ylabel() and "(min)" in bottom.get_xlabel()
    assert "% of set rate" in bottom.get_ylabel()
    labels = {ln.get_label(): ln for ln in top.get_lines()}
    ideal = [ln for lab, ln in labels.items() if lab.startswith("ideal")]
    assert len(ideal) == 1
    # drawn above every measured line, so it stays visible
    assert all(ideal[0].get_zorder() > ln.get_zorder() for ln in top.get_lines()
               if ln is not ideal[0])
    assert any(ln.get_label() == "measured \u2212 ideal" for ln in bottom.get_lines())
    for ax in (top, bottom):
        assert any(str(p.get_label()).startswith("acceptance band") for p in ax.patches)
    # the error panel shows the -3 % pump: its axis is zoomed to the data, not the band
    lo, hi = bottom.get_ylim()
    assert lo < -3 < hi and hi - lo < 20

    tfig = report.trumpet_figure(slow_run, band=(-15.0, 14.5))
    (ax,) = tfig.axes
    assert "0.5 mL/day" in ax.get_title() and "60\u2013120 min" in ax.get_title()
    assert "(min)" in ax.get_xlabel() and "% of set rate" in ax.get_ylabel()
    assert any(ln.get_label() == "ideal (0 %)" for ln in ax.get_lines())
    assert any(str(p.get_label()).startswith("acceptance band (-15 to +14.5 %)") for p in ax.patches)

    paths = report.write_report(slow_run, str(tmp_path / "r"))
    for key in ("startup_png", "trumpet_png"):
        w, _, dpi = _png_size_and_dpi(paths[key])
        assert dpi == pytest.approx(150, abs=0.5) and w == 8 * 150


def test_report_record_and_verdict_in_html_json_csv(slow_run, tmp_path):
    """Finding (issue 14): the bench report had no date, operator, rig uid, firmware version,
    plan CRC, balance model and serial, package version or acceptance limits."""
    res = dict(slow_run, record=RECORD)
    res["acceptance"] = limits.evaluate_bench(res, limits.DEFAULTS)
    assert res["acceptance"]["verdict"] == "PASS"
    paths = report.write_report(res, str(tmp_path / "r"))
    with open(paths["json"]) as f:
        data = json.load(f)
    assert data["record"] == RECORD
    assert data["limits"]["rate_error_pct"] == [-15.0, 14.5]
    assert data["acceptance"]["verdict"] == "PASS"
    with open(paths["summary_csv"], encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["section", "item", "value", "limit", "result"]
    rec = {r[1]: r[2] for r in rows if r[0] == "record"}
    assert list(rec) == [label for _, label in report.RECORD_FIELDS]
    assert rec["operator"] == "A. Tester" and rec["plan CRC"] == "1a2b3c4d"
    assert rec["balance serial"] == "B123456" and rec["git revision"] == "abcdef012345"
    acc = [r for r in rows if r[0] == "acceptance"]
    assert acc[0][1] == "overall error A" and acc[0][3] == "-15 to +14.5 %" and acc[0][4] == "PASS"
    assert acc[-1][1:] == ["verdict", "", "", "PASS"]
    with open(paths["html"], encoding="utf-8") as f:
        page = f.read()
    for text in ("A. Tester", "00112233aabbccdd", "pico", "1a2b3c4d", "XPR2U 2.1 g", "B123456",
                 "abcdef012345", "2026-12-04T10:00:00Z", "-15 to +14.5 %", "verdict"):
        assert text in page, text
    assert page.count("data:image/png;base64,") == 2


def test_acceptance_fails_outside_the_limits(slow_run):
    """A -3 % pump passes the default limits and fails a lab's +-2 % (with the check named);
    a window that does not fit is NOT EVALUATED, never a silent pass or fail."""
    tight = dict(limits.DEFAULTS, rate_error_pct=(-2.0, 2.0))
    acc = limits.evaluate_bench(slow_run, tight)
    assert acc["verdict"] == "FAIL"
    failed = [c for c in acc["checks"] if c["result"] == "FAIL"]
    assert [c["name"] for c in failed] == ["rate_error_pct"]
    assert failed[0]["measured"] == pytest.approx(-3.0, abs=0.15)
    band = dict(limits.DEFAULTS, trumpet_error_pct=(-3.2, 3.2))
    acc = limits.evaluate_bench(slow_run, band)
    assert acc["verdict"] == "FAIL"  # Ep(min) of the short windows is below -3.2 %
    assert {c["name"] for c in acc["checks"] if c["result"] == "FAIL"} == {"trumpet_error_pct"}
    bolus = dict(limits.DEFAULTS, bolus_single_error_pct=(-1.0, 1.0))
    acc = limits.evaluate_bench(slow_run, bolus)
    # every bolus is about -3 %: the largest over- and under-delivery are both below -1 %
    assert [c["what"] for c in acc["checks"] if c["result"] == "FAIL"] == [
        "largest bolus over-delivery", "largest bolus under-delivery"]
    short = dict(slow_run, trumpet=[dict(slow_run["trumpet"][0], ep_max=None, ep_min=None)])
    acc = limits.evaluate_bench(short, limits.DEFAULTS)
    assert [c["result"] for c in acc["checks"]][1:3] == ["NOT EVALUATED"] * 2
    assert acc["verdict"] == "PASS"


def test_calibration_report_and_limits(bench_setup, tmp_path):
    """`calibrate` files the same record and its own limits (spread, change)."""
    rig, bal, _ = bench_setup
    cal = procedures.calibrate(rig, bal, steps=400, repeats=3)
    cal["record"] = RECORD
    cal["limits"] = limits.relevant(limits.DEFAULTS, "calibrate")
    cal["acceptance"] = limits.evaluate_calibration(cal, limits.DEFAULTS)
    assert cal["acceptance"]["verdict"] == "PASS"  # -3 % change, tiny spread
    tight = dict(limits.DEFAULTS, calib_change_pct=(-1.0, 1.0))
    assert limits.evaluate_calibration(cal, tight)["verdict"] == "FAIL"
    paths = report.write_calibration_report(cal, str(tmp_path / "c"))
    with open(paths["csv"]) as f:
        runs = list(csv.reader(f))
    assert runs[0] == ["run", "steps", "mass_ug", "volume_nl", "step_pl"] and len(runs) == 4
    with open(paths["summary_csv"], encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert ["record", "operator", "A. Tester", "", ""] in rows
    assert rows[-1] == ["acceptance", "verdict", "", "", "PASS"]
    with open(paths["json"]) as f:
        assert json.load(f)["record"]["rig_uid"] == "00112233aabbccdd"
    with open(paths["html"], encoding="utf-8") as f:
        page = f.read()
    assert "step calibration" in page and "XPR2U 2.1 g" in page and "calib_sd_pct" in page


def test_limits_from_options_and_a_file(tmp_path):
    assert limits.parse_option("rate_error_pct=-5,5") == ("rate_error_pct", (-5.0, 5.0))
    assert limits.parse_option("calib_sd_pct=,0.2") == ("calib_sd_pct", (None, 0.2))
    with pytest.raises(PumprigError, match="did you mean 'rate_error_pct'"):
        limits.parse_option("rate_eror_pct=-5,5")
    for bad in ("rate_error_pct", "rate_error_pct=5", "rate_error_pct=5,-5",
                "rate_error_pct=a,b", "rate_error_pct=,"):
        with pytest.raises(PumprigError):
            limits.parse_option(bad)
    f = tmp_path / "limits.toml"
    f.write_text('rate_error_pct = [-5.0, 5]\ncalib_sd_pct = ["none", 0.2]\n')
    got = limits.resolve(str(f), [("rate_error_pct", (-4.0, 4.0))])
    assert got["rate_error_pct"] == (-4.0, 4.0)  # the command line wins over the file
    assert got["calib_sd_pct"] == (None, 0.2)
    assert got["trumpet_error_pct"] == limits.DEFAULTS["trumpet_error_pct"]
    f.write_text("trumpet_eror_pct = [-5, 5]\n")
    with pytest.raises(PumprigError, match="did you mean 'trumpet_error_pct'"):
        limits.resolve(str(f))
    with pytest.raises(PumprigError, match="cannot read the limits file"):
        limits.resolve(str(tmp_path / "none.toml"))


def test_bench_package_has_no_import_circle():
    """Finding (issue 16): bench.py and benchrig.py imported each other. The bench is now a
    package whose modules import in one direction: __init__ -> command -> report, limits,
    procedures -> rig. `from pumprig.bench import x` counts as importing the package's
    __init__ too (it runs it), so no module of the package may write it. The old benchrig
    module is gone."""
    import ast
    import importlib.util
    import pathlib

    pkg = pathlib.Path(procedures.__file__).parent
    names = {p.stem for p in pkg.glob("*.py")}
    assert names == {"__init__", "rig", "procedures", "report", "limits", "command"}
    graph = {}
    for name in names:
        tree = ast.parse((pkg / (name + ".py")).read_text())
        deps = set()
        for node in ast.walk(tree):  # imports inside functions count too
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "pumprig.bench":
                    deps |= {"__init__"} | {a.name for a in node.names}
                elif node.module.startswith("pumprig.bench."):
                    deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names
                         if a.name.startswith("pumprig.bench.")}
        graph[name] = (deps & names) - {name}
    assert graph["rig"] == set() and graph["limits"] == set() and graph["report"] == set()
    assert graph["procedures"] == {"rig"}
    assert graph["__init__"] == {"command"}
    assert graph["command"] == {"limits", "procedures", "report", "rig"}

    def reach(start, path):
        for d in graph[path[-1]]:
            assert d != start, "import circle: %s" % " -> ".join(path + [d])
            if d not in path:
                reach(start, path + [d])

    for name in names:
        reach(name, [name])
    assert importlib.util.find_spec("pumprig.benchrig") is None


def test_git_revision_only_of_a_pumprig_checkout(tmp_path):
    """The record's git revision is this checkout's, and never that of some other repository
    the package happens to sit in (an installed package inside a lab's own repository)."""
    import subprocess

    rev = report.git_revision()
    here = subprocess.run(["git", "-C", os.path.dirname(report.__file__), "rev-parse",
                           "--short=12", "HEAD"], capture_output=True, text=True)
    assert rev is not None and rev.split("-")[0] == here.stdout.strip()
    other = tmp_path / "lab-repo"
    (other / "site" / "pumprig").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    (other / "x.txt").write_text("x")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "-C", str(other), "add", "x.txt"], check=True)
    subprocess.run(["git", "-C", str(other), "commit", "-q", "-m", "x"], check=True, env=env)
    assert report.git_revision(str(other / "site" / "pumprig")) is None
