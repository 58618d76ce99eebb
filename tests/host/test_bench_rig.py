"""`pumprig bench` and `pumprig calibrate` end to end on the virtual rig: the real firmware, the
virtual MT-SICS balance, virtual time (warp), through ``pumprig.cli.main``.

Rate choice: 2.88 mL/day (120 uL/h). With the rig's 0.25 uL step one step comes every 7.5 s,
exactly four per 30 s sample, so every sample interval holds the same whole number of steps
and the 2 min window already spans 16 steps: a perfect pump reads 0 % on every window and a
-3 % mechanism reads -3 % on every window, the balance noise (2 ug SD on 60 ug per sample)
aside. At the implant rate 0.5 mL/day one step comes every 43.2 s and the 2 min window holds
2.8 steps: that case is covered by tests/host/test_trumpet.py and the example in docs/bench.md.
A 2 h run is 241 balance readings and about 1000 steps: under a second or two of wall time.
"""

import json
import os
import re

import pytest
from pumprig import cli

RATE = "2.88 mL/day"
RUN = ["--rate", RATE, "--duration", "2h"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("PUMPRIG_HOME", str(h))
    monkeypatch.delenv("PUMPRIG_PORT", raising=False)
    return h


def run_json(capsys, argv):
    rc = cli.main(argv + ["--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "Traceback" not in cap.err
    return json.loads(cap.out), cap.err


def test_bench_json_windows_and_report_files(capsys, tmp_path):
    out = tmp_path / "report"
    data, err = run_json(capsys, ["--port", "sim", "bench", *RUN, "--windows-scale", "2",
                                  "--operator", "A. Tester", "--out", str(out)])
    res = data["results"]
    # issue 14: the record a lab files, from the rig's hello and the balance's I2/I4
    rec = res["record"]
    assert rec["operator"] == "A. Tester" and rec["rig_port"] == "sim"
    assert re.fullmatch(r"[0-9a-f]{16}", rec["rig_uid"]) and rec["board"] == "sim"
    assert rec["firmware"] and rec["virtual_rig"] is True
    assert re.fullmatch(r"[0-9a-f]{8}", rec["plan_crc"])
    assert rec["balance_model"].startswith("PUMPRIG-VB") and rec["balance_serial"]
    assert rec["package_version"] == __import__("pumprig").__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["started_utc"])
    assert rec["started_utc"] <= rec["finished_utc"]
    assert res["limits"]["rate_error_pct"] == [-15.0, 14.5]
    assert res["acceptance"]["verdict"] == "PASS"
    assert res["windows_min"][:5] == [2, 5, 11, 19, 31]
    assert res["windows_min"] == [2, 5, 11, 19, 31, 4, 10, 22, 38, 62]
    rows = {r["window_min"]: r for r in res["trumpet"]}
    for w in (2, 5, 11, 19, 31, 4, 10, 22, 38):
        assert isinstance(rows[w]["ep_max"], float) and isinstance(rows[w]["ep_min"], float)
        assert rows[w]["ep_min"] <= rows[w]["ep_max"]
        # an honest pump, 4 whole steps per sample: only the balance noise is left
        assert -0.3 < rows[w]["ep_min"] and rows[w]["ep_max"] < 0.3
    assert rows[62]["ep_max"] is None and "does not fit" in rows[62]["note"]
    assert res["ep_max"][0] == rows[2]["ep_max"] and res["ep_min"][4] == rows[31]["ep_min"]
    assert abs(res["overall_error_pct"]) < 0.05
    assert res["analysis"]["rule"] == "second-hour" and res["n_samples"] == 241
    assert res["step_pl"] == 250_000 and res["pulse_period_s"] == pytest.approx(7.5)
    # the samples are the world's virtual clock, 30 s apart, and the mass grows with the steps
    ts = [t for t, _ in res["samples"]]
    assert ts[0] == 0 and ts[-1] == pytest.approx(7200, abs=0.01)
    assert res["samples"][-1][1] == pytest.approx(2.88e6 / 12 * 0.998, rel=0.01)  # ug in 2 h
    # --json: stdout is only the JSON, no progress bar on a non-terminal stderr
    assert "[" not in err
    files = data["files"]
    assert set(files) == {"csv", "summary_csv", "json", "startup_png", "trumpet_png", "html"}
    for key, path in files.items():
        assert os.path.dirname(path) == str(out) and os.path.getsize(path) > 100, key
    for key in ("startup_png", "trumpet_png"):
        with open(files[key], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(files["csv"]) as f:
        lines = f.read().splitlines()
    assert lines[0] == "index,t_s,mass_ug,flow_ml_h" and len(lines) == 242
    with open(files["json"]) as f:
        assert json.load(f)["windows_min"] == res["windows_min"]
    with open(files["html"], encoding="utf-8") as f:
        page = f.read()
    assert "Trumpet curve" in page and page.count("data:image/png;base64,") == 2
    assert rec["rig_uid"] in page and "A. Tester" in page and "PASS" in page
    with open(files["summary_csv"], encoding="utf-8") as f:
        summary = f.read()
    assert rec["rig_uid"] in summary and rec["balance_serial"] in summary


def test_bench_verdict_follows_the_limits(capsys, tmp_path):
    """A lab's own limits: a -3 % pump fails a +-2 % rate limit; the text says which check."""
    lim = tmp_path / "limits.toml"
    lim.write_text("rate_error_pct = [-2.0, 2.0]\n")
    rc = cli.main(["bench", "--port", "sim", "--pump-error", "-3%", *RUN, "--limits", str(lim)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err  # the measurement worked; the verdict is the result
    line = [x for x in cap.out.splitlines() if x.startswith("acceptance:")]
    assert len(line) == 1
    m = re.fullmatch(r"acceptance: FAIL \(overall error A ([-+0-9.]+) % outside -2 to \+2 %\)",
                     line[0])
    assert m and float(m.group(1)) == pytest.approx(-3.0, abs=0.05), line[0]


def test_bench_text_prints_every_window_and_a(capsys, tmp_path):
    rc = cli.main(["bench", "--port", "sim", "--rate", RATE, "--duration", "40min",
                   "--boluses", "3", "--bolus-volume", "5 uL", "--out", str(tmp_path / "r")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "overall error A" in cap.out and "second-half" in cap.out
    for w in (2, 5, 11, 19, 31):
        line = [x for x in cap.out.splitlines() if x.strip().startswith("P = ") and
                x.split()[2] == str(w)]
        assert len(line) == 1 and "Ep(max)" in line[0] and "Ep(min)" in line[0]
    # 20 min analysed: the 31 min window does not fit and says so with dashes
    assert [x for x in cap.out.splitlines() if " 31 min" in x][0].count(" - ") == 2
    assert "boluses: mean" in cap.out and "report:" in cap.out
    # the progress bar (tqdm) is drawn on a terminal only: a log gets no bar and no \r
    assert "80/80" not in cap.err and "\r" not in cap.err
    with open(tmp_path / "r" / "results.json") as f:
        b = json.load(f)["boluses"]
    assert b["n"] == 3 and b["steps"] == 20 and abs(b["mean_error_pct"]) < 0.1


def _record(fs):
    with open(os.path.join(fs, "data", "calib"), "rb") as f:
        return f.read()


def _calib(fs):
    """The calib record as the firmware reads it back (its CRC checked; its bytes are the
    runtime's json, not canonical: pumpcore.store.write_record)."""
    from pumpcore.store import decode

    rec = decode(_record(fs), "calib")
    assert sorted(rec) == ["gen", "step_pl"] and isinstance(rec["gen"], int), rec
    return rec


def test_slow_pump_then_calibrate_then_bench(capsys, tmp_path):
    """--port sim with --sim-state: the board files (and so the calibration) survive from one
    command to the next, like a bench rig left on the bench; the mechanism is -3 % each time."""
    state = str(tmp_path / "rig")
    sim = ["--port", "sim", "--sim-state", state, "--pump-error", "-3%"]
    data, _ = run_json(capsys, ["bench", *sim, *RUN])
    res = data["results"]
    assert res["step_pl"] == 250_000
    assert res["overall_error_pct"] == pytest.approx(-3.0, abs=0.05)
    for r in res["trumpet"]:
        assert -3.3 < r["ep_min"] <= r["ep_max"] < -2.7

    fs = os.path.join(state, "rig", "fs")
    # a blank board commits its first set with the config's calibration (issue 11: from then
    # on a missing calib record is corruption, not a silent return to the default)
    assert _calib(fs)["step_pl"] == 250_000
    cal, _ = run_json(capsys, ["calibrate", *sim, "--operator", "B. Tester", "--out",
                               str(tmp_path / "cal")])
    assert cal["applied"] and cal["repeats"] == 5 and cal["previous_step_pl"] == 250_000
    assert cal["record"]["operator"] == "B. Tester" and cal["record"]["board"] == "sim"
    assert cal["acceptance"]["verdict"] == "PASS" and "calib_sd_pct" in cal["limits"]
    assert set(cal["files"]) == {"csv", "summary_csv", "json", "html"}
    with open(cal["files"]["html"], encoding="utf-8") as f:
        assert cal["record"]["rig_uid"] in f.read()
    assert cal["step_pl"] == pytest.approx(242_500, rel=0.0005)
    assert cal["change_pct"] == pytest.approx(-3.0, abs=0.05)
    assert 0 < cal["sd_pct"] < 0.05 and cal["range_pct"] >= cal["sd_pct"]
    assert [r["mass_ug"] for r in cal["runs"]] == [pytest.approx(96_807, abs=30)] * 5
    # stored by the firmware in its CRC-protected calib record
    assert _calib(fs)["step_pl"] == cal["step_pl"]
    rec = _record(fs)
    assert len(rec.split(b"*")[1]) == 9

    # a new rig process boots the same firmware files: calib.get reads the stored value
    data, _ = run_json(capsys, ["bench", *sim, *RUN])
    res = data["results"]
    assert res["step_pl"] == cal["step_pl"]
    assert abs(res["overall_error_pct"]) < 0.5
    assert abs(res["overall_error_pct"]) < 0.05  # in fact: noise and rounding only
    assert all(abs(r["ep_max"]) < 0.5 and abs(r["ep_min"]) < 0.5
               for r in res["trumpet"] if r["window_min"] >= 5)

    # flip one digit of the stored calibration: the CRC catches it at boot, the rig goes to its
    # safe state, a flow run is refused, and a new calibration is the remedy
    path = os.path.join(fs, "data", "calib")
    with open(path, "wb") as f:
        f.write(rec.replace(b'"step_pl":2', b'"step_pl":3', 1))
    rc = cli.main(["bench", *sim, *RUN])
    cap = capsys.readouterr()
    assert rc == 1 and "Traceback" not in cap.err
    assert cap.err.startswith("pumprig: the rig is in its safe state (calibration record")
    assert "MEMORY" in cap.err
    cal2, _ = run_json(capsys, ["calibrate", *sim, "--repeats", "2"])
    assert cal2["previous_step_pl"] == 250_000  # the corrupt record was not used
    assert cal2["step_pl"] == pytest.approx(242_500, rel=0.0005)
    data, _ = run_json(capsys, ["bench", *sim, *RUN])
    assert abs(data["results"]["overall_error_pct"]) < 0.5


@pytest.fixture
def running_rig(home):
    """A virtual rig as `pumprig sim --link L` leaves it: real time (no warp), registered in
    $PUMPRIG_HOME/rigs, firmware flashed and running."""
    from pumprig.virtual.rig import open_rig

    rig = open_rig()
    try:
        rig.connect().close()
        yield rig
    finally:
        rig.stop()


def test_registered_virtual_rig_calibrated_in_virtual_time(capsys, running_rig, home):
    from pumprig.client import Client
    from pumprig.ports import list_virtual

    rig = running_rig
    assert [r["port"] for r in list_virtual()] == [rig.link]
    assert rig.world.status()["warp"] is False
    argv = ["--port", rig.link]  # no --balance: the registered rig's virtual balance
    data, _ = run_json(capsys, argv + ["bench", "--pump-error=-3%", *RUN])
    assert data["results"]["overall_error_pct"] == pytest.approx(-3.0, abs=0.05)
    assert rig.world.status()["true_step_pl"] == 242_500  # stays set on a running rig
    t_after_bench = rig.world.measure()["time_ms"]
    assert t_after_bench > 7_200_000  # the world's clock ran 2 h in the test's seconds
    assert rig.world.status()["warp"] is False  # restored

    cal, _ = run_json(capsys, argv + ["calibrate", "--steps", "200", "--repeats", "3"])
    assert cal["step_pl"] == pytest.approx(242_500, rel=0.0005)
    with Client(rig.link, role="patient", home=str(home)) as c:
        assert c.calib_get() == {"step_pl": cal["step_pl"]}
        assert c.status()["therapy"] == "stopped" and c.status()["mode"] != "bench"
    assert _calib(rig.fs)["step_pl"] == cal["step_pl"]

    data, _ = run_json(capsys, argv + ["bench", *RUN])
    assert abs(data["results"]["overall_error_pct"]) < 0.5


def test_errors_are_one_line(capsys, tmp_path):
    cases = [
        (["bench", "--rate", RATE], "pumprig: no port"),
        (["bench", "--port", str(tmp_path / "nope"), "--rate", RATE], "pumprig: no such port"),
        (["bench", "--port", str(tmp_path / "nope"), "--sim-state", str(tmp_path), "--rate",
          RATE], "pumprig: --sim-state goes with --port sim"),
        (["bench", "--port", "sim", "--rate", RATE, "--boluses", "3"],
         "pumprig: --boluses needs --bolus-volume"),
        (["bench", "--port", "sim", "--rate", RATE, "--balance", str(tmp_path / "nobal"),
          "--duration", "2min"], "pumprig: "),
        (["calibrate", "--port", "sim", "--pump-error", "-80%"], "pumprig: the pump error"),
        (["bench", "--port", "sim", "--rate", RATE, "--limit", "rate_eror_pct=-5,5"],
         "pumprig: unknown acceptance limit 'rate_eror_pct' (did you mean 'rate_error_pct'?)"),
        (["bench", "--port", "sim", "--rate", RATE, "--limits", str(tmp_path / "no.toml")],
         "pumprig: cannot read the limits file"),
    ]
    for argv, msg in cases:
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 1, (argv, err)
        assert err.startswith(msg) and "Traceback" not in err, (argv, err)
        assert err.count("\n") == 1, err
