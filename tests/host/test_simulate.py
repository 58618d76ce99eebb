"""`pumprig simulate`: the real firmware on a virtual rig, months in seconds.

Delivery is measured by the world's step log (the rig), never taken from the firmware; the
ideal comes from the plan. These are the correctness claims of the simulation issue.
"""

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from pumprig import cli
from pumprig.plans import load_plan_file
from pumprig.simulate import simulate

pytestmark = pytest.mark.skipif(shutil.which("micropython") is None and not Path(
    ".venv/bin/micropython").exists(), reason="MicroPython unix port not installed")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JAN1 = int(dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc).timestamp())


def _run(name, days, **kw):
    plan, meta = load_plan_file(EXAMPLES / name)
    fill = kw.pop("fill_nl", meta.get("fill_nl", 20_000_000))
    return simulate(plan, days, fill, kw.pop("start", JAN1), scenario=meta.get("scenario"), **kw)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("p*.toml")))
def test_every_example_within_one_step_over_90_days(name):
    r = _run(name, 90)
    assert r["max_step_error"] <= 1.0, (name, r["max_step_error"])
    assert r["delivered_steps"] > 0
    # the error was checked over the whole run, or up to an alarm that stops delivery
    stops = [a for a in r["alarms"] if a["kind"] in ("EMPTY", "EOS", "STALL", "OCCLUSION")]
    assert r["error_checked_until_s"] == (stops[0]["at_s"] if stops else 90 * 86_400)


def test_p1_low_on_day_90_then_empty_and_stop():
    r = _run("p1-baclofen-continuous.toml", 100)
    # 20 mL at 0.2 mL/day reaches 2.0 mL after exactly 90 days: to the minute
    assert abs(r["low_at_s"] - 90 * 86_400) < 60, r["low_at_s"]
    assert r["low_volume_ml"] == 2.0
    # EMPTY at 1.0 mL, five days later, measured on the rig
    assert abs(r["empty_at_s"] - 95 * 86_400) < 60, r["empty_at_s"]
    assert r["empty_volume_ml"] == 1.0
    # on_empty = "stop": the rig pulses nothing after EMPTY
    after = [d for d in r["per_day"] if d["day"] > 95]
    assert after and all(d["steps"] == 0 for d in after)
    assert r["delivered_steps"] == 76_000  # 19 mL of 0.25 µL steps
    kinds = [a["kind"] for a in r["alarms"]]
    assert kinds.index("LOW") < kinds.index("EMPTY")


def test_patient_boluses_past_lockout_or_daily_max_are_refused():
    r = _run("p5-morphine-patient.toml", 2)
    b = r["boluses"]
    reasons = [x["reason"] for x in b["refusals"]]
    assert b["given"] == 6 and reasons.count("LOCKOUT") == 2 and reasons.count("MAX_24H") == 1
    # day 1: 2 mg/day basal (0.2 mL) + 6 x 0.1 mg (6 x 10 µL), measured by the rig
    assert abs(r["per_day"][0]["volume_nl"] - 260_000) <= 250
    assert r["max_step_error"] <= 1.0


def _dst_plan(tmp_path):
    # nothing all day except 02:00-03:00 local: 960 mcg/day for one hour = 40 mcg = 80 steps
    p = tmp_path / "night.toml"
    p.write_text("""
[drug]
name = "baclofen"
concentration = "2000 mcg/mL"
[basal]
mode = "flex"
segments = [["00:00", "0 mcg/day"], ["02:00", "960 mcg/day"], ["03:00", "0 mcg/day"]]
""")
    return load_plan_file(p)[0]


def test_flex_follows_the_clock_across_daylight_saving(tmp_path):
    plan = _dst_plan(tmp_path)
    noon = lambda d: int(dt.datetime(2027, *d, 12, tzinfo=dt.timezone.utc).timestamp())  # noqa: E731
    # spring forward in Paris on 2027-03-28: the local hour 02:00-03:00 does not exist
    r = simulate(plan, 3, 20_000_000, noon((3, 26)), tz="Europe/Paris")
    assert [d["steps"] for d in r["per_day"]] == [80, 0, 80]
    assert r["max_step_error"] <= 1.0
    # fall back on 2027-10-31: it happens twice
    r = simulate(plan, 3, 20_000_000, noon((10, 29)), tz="Europe/Paris")
    assert [d["steps"] for d in r["per_day"]] == [80, 160, 80]
    assert r["max_step_error"] <= 1.0


def test_battery_fault_injection_raises_eos_and_stops(tmp_path):
    r = _run("p1-baclofen-continuous.toml", 3, faults=[{"kind": "battery", "at_s": 86_400,
                                                          "for_s": None, "mv": 2950}])
    kinds = [a["kind"] for a in r["alarms"]]
    assert "EOS" in kinds and "BATTERY_FAULT" not in kinds
    eos = next(a for a in r["alarms"] if a["kind"] == "EOS")
    assert 86_400 < eos["at_s"] < 86_400 + 3 * 3600  # debounced: samples every 5 min once low
    assert r["per_day"][2]["steps"] == 0  # the motor stays stopped


def test_cli_json_and_plot(tmp_path, capsys):
    png = tmp_path / "p1.png"
    rc = cli.main(["simulate", str(EXAMPLES / "p1-baclofen-continuous.toml"), "--days", "3",
                   "--json", "--plot", str(png)])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("days", "delivered_ml", "ideal_ml", "max_step_error", "alarms", "per_day",
                "wall_s"):
        assert key in r
    assert r["days"] == 3 and len(r["per_day"]) == 3
    assert r["delivered_ml"] == pytest.approx(0.6, abs=0.00025)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_cli_user_mistakes(tmp_path, capsys):
    assert cli.main(["simulate", str(tmp_path / "missing.toml")]) == 1
    assert "pumprig:" in capsys.readouterr().err
    assert cli.main(["simulate", str(EXAMPLES / "p1-baclofen-continuous.toml"),
                     "--fault", "explode@1d"]) == 1
    err = capsys.readouterr().err
    assert "pumprig: --fault" in err and "Traceback" not in err


def test_p8_refill_by_date_alarms_on_its_own():
    r = _run("p8-alarms.toml", 45)
    rb = [a for a in r["alarms"] if a["kind"] == "REFILL_BY"]
    # 40 days after the refill, although 18 mL of the 20 mL fill are still there
    assert len(rb) == 1 and abs(rb[0]["at_s"] - 40 * 86_400) < 60
    assert r["low_at_s"] is None and not rb[0]["critical"]
