"""bench_run, calibrate and write_report on a simulated pump and the virtual balance (pty)."""

import argparse
import csv
import io
import json
import os

import pytest
from pumprig.balance import Balance
from pumprig.bench import command, procedures, report
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
    assert command.parse_rate("500000") == 500_000
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
                lambda: command.parse_duration("2 fortnights"), lambda: command.parse_volume("0 uL")):
        with pytest.raises(PumprigError):
            bad()


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
