"""Invalid plans are refused with a specific error, and the running plan stays as it was.

Three doors: `pumpcore.plan.validate` (field + reason), the pump app (`plan.set` -> PLAN_INVALID
naming the field; plan, schedule, therapy and delivery untouched, the motor keeps its pace),
and a TOML plan file through `pumprig plan check` (exit status 1 and a message naming the file
key; no traceback).
"""

import os
import sys

import pytest
from pumpcore import plan as planmod
from pumpcore import proto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "board"))
from fakeboard import FakeBoard, run_until  # noqa: E402
from pumpcore.app import App  # noqa: E402

P5 = {"drug": "morphine", "conc_ng_ml": 10_000_000,
      "basal": {"kind": "continuous", "ng_day": 2_000_000},
      "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 7200, "max_24h": 6},
      "caps": {"ng_24h": 3_000_000}}
LIMITS = {"max_nl_day": 200 * 86_400 * 250, "reservoir_nl": 20_000_000}
PAT = P5["patient"]


def w(**kw):
    p = dict(P5)
    p.update(kw)
    return p


# (name, plan, field, words of the reason)
BAD = [
    ("negative dose", w(basal={"kind": "continuous", "ng_day": -5}), "basal.ng_day",
     "at least 0"),
    ("negative concentration", w(conc_ng_ml=-1), "conc_ng_ml", "at least 1"),
    ("a float", w(conc_ng_ml=1.5), "conc_ng_ml", "whole number"),
    ("NaN", w(basal={"kind": "continuous", "ng_day": float("nan")}), "basal.ng_day",
     "whole number"),
    ("infinity", w(basal={"kind": "continuous", "ng_day": float("inf")}), "basal.ng_day",
     "whole number"),
    ("a bool", w(conc_ng_ml=True), "conc_ng_ml", "whole number"),
    ("a string", w(conc_ng_ml="10"), "conc_ng_ml", "whole number"),
    ("huge", w(basal={"kind": "continuous", "ng_day": 10**12}), "basal.ng_day", "at most"),
    ("over the mechanism", {"drug": "saline", "conc_ng_ml": 1, "caps": {"ng_24h": 10**10},
                            "basal": {"kind": "continuous", "ng_day": 5_000_000_000}},
     "basal", "mechanism limit"),
    ("too many segments", {"drug": "baclofen", "conc_ng_ml": 2_000_000, "basal": {
        "kind": "flex", "segments": [[i * 50, 100_000] for i in range(25)]}},
     "basal.segments", "at most 24"),
    ("too many periodic times", {"drug": "baclofen", "conc_ng_ml": 2_000_000,
                                 "basal": {"kind": "continuous", "ng_day": 100_000},
                                 "periodic": {"times_min": list(range(0, 1300, 100)),
                                              "ng": 1000, "dur_s": 60}},
     "periodic.times_min", "1-12"),
    ("over the 24 h cap", w(caps={"ng_24h": 2_500_000}), "caps.ng_24h", "above the cap"),
    ("over the drug ceiling", w(caps={"ng_24h": 30_000_000}), "caps.ng_24h", "ceiling"),
    ("over the 1 h cap", w(caps={"ng_24h": 3_000_000, "ng_1h": 10}), "caps.ng_1h",
     "in an hour"),
    ("unknown key", w(extra=1), "extra", "unknown key"),
    ("unknown nested key", w(patient=dict(PAT, x=1)), "patient.x", "unknown key"),
    ("unknown drug without caps", {"drug": "fentanyl", "conc_ng_ml": 1000,
                                   "basal": {"kind": "continuous", "ng_day": 100}},
     "caps.ng_24h", "required"),
    ("patient bolus of baclofen", {"drug": "baclofen", "conc_ng_ml": 2_000_000,
                                   "basal": {"kind": "continuous", "ng_day": 100_000},
                                   "patient": PAT}, "patient", "may not"),
    ("lockout shorter than the bolus", w(patient=dict(PAT, lockout_s=300)),
     "patient.lockout_s", "at least the bolus"),
    ("too many boluses a day", w(patient=dict(PAT, max_24h=100)), "patient.max_24h",
     "at most 48"),
    ("overlapping periodic boluses", {"drug": "baclofen", "conc_ng_ml": 2_000_000,
                                      "basal": {"kind": "continuous", "ng_day": 100_000},
                                      "periodic": {"times_min": [60, 70], "ng": 1000,
                                                   "dur_s": 1200}},
     "periodic.dur_s", "run into"),
    ("empty above low", w(reservoir={"low_nl": 1000, "empty_nl": 2000}), "reservoir.empty_nl",
     "not be above"),
    ("threshold over the reservoir", w(reservoir={"low_nl": 10**9}), "reservoir.low_nl",
     "at most"),
    ("bad drug name", w(drug="Morphine!"), "drug", "lowercase"),
    ("not a table", [1, 2], "plan", "table"),
    ("no basal", {"drug": "morphine", "conc_ng_ml": 1}, "basal", "required"),
    ("unknown basal kind", w(basal={"kind": "pulse"}), "basal.kind", "one of"),
]


@pytest.mark.parametrize("name,plan,field,words", BAD, ids=[b[0] for b in BAD])
def test_validate_names_the_field_and_reason(name, plan, field, words):
    with pytest.raises(planmod.PlanError) as ei:
        planmod.validate(plan, LIMITS)
    assert ei.value.field == field
    assert words in ei.value.reason


def test_the_app_refuses_each_and_keeps_the_running_plan(tmp_path):
    b = FakeBoard(root=str(tmp_path) + "/")
    app = App(b, keys={})
    app.call("refill", {"volume_nl": 20_000_000}, "clinician", "f", 0)
    app.call("plan.set", {"plan": P5}, "clinician", "p", 0)
    run_until(app, b, 3_600_000)
    before = (app.plan_crc(), app.therapy, app.sched.to_dict(), app.delivery.owed,
              app.delivery.t_ms, app.steps, app.lockout_until_ms, app.seg)
    plan_rec = open(tmp_path / "data" / "plan", "rb").read()
    for i, (name, plan, field, _words) in enumerate(BAD):
        with pytest.raises(proto.CommandError) as ei:
            app.call("plan.set", {"plan": plan}, "clinician", "x%d" % i, b.t_ms)
        assert ei.value.code == proto.PLAN_INVALID, name
        assert ei.value.message.startswith(field + ":"), (name, ei.value.message)
        now = (app.plan_crc(), app.therapy, app.sched.to_dict(), app.delivery.owed,
               app.delivery.t_ms, app.steps, app.lockout_until_ms, app.seg)
        assert now == before, name
    assert open(tmp_path / "data" / "plan", "rb").read() == plan_rec
    # and the pump keeps delivering the old plan at its pace: 800 steps a day
    run_until(app, b, 25 * 3_600_000)
    assert abs(b.pulses_at(b.t_ms) - 800 * 25 // 24) <= 1


def test_a_frame_with_a_float_never_reaches_the_plan(tmp_path):
    b = FakeBoard(root=str(tmp_path) + "/")
    app = App(b, keys={})
    app.call("plan.set", {"plan": P5}, "clinician", "p", 0)
    crc = app.plan_crc()
    app.server.role = "clinician"
    body = proto.encode_request("z1", "plan.set", {"plan": P5}).decode()
    body = body.replace('"ng_day":2000000', '"ng_day":2000000.5')
    from binascii import crc32

    line = body[: body.rfind("*")]
    line = "%s*%08x\n" % (line, crc32(line.encode()) & 0xFFFFFFFF)
    app.server.take_output()
    app.server.feed(line.encode(), 0)
    frames = [proto.decode(x + b"\n") for x in app.server.take_output().split(b"\n") if x]
    out = [f for f in frames if f.id == "z1"][0]
    assert out.name == "err" and out.body["code"] == proto.BAD_FRAME
    assert app.plan_crc() == crc


DRUG = '[drug]\nname = "morphine"\nconcentration = "10 mg/mL"\n'
BASAL = '[basal]\nmode = "continuous"\n'
FLEX = "".join('["%02d:%02d", "100 mcg/day"],' % (i * 50 // 60, i * 50 % 60) for i in range(25))
TOML = [
    ("wrong units", DRUG + BASAL + 'dose = "2 mL/day"\n', "basal.dose", "not a mass unit"),
    ("negative", DRUG + BASAL + 'dose = "-2 mg/day"\n', "basal.dose", "cannot read"),
    ("NaN", DRUG + BASAL + 'dose = "nan mg/day"\n', "basal.dose", "cannot read"),
    ("a bare float", DRUG + BASAL + "dose = 2.5\n", "basal.dose", "cannot read"),
    ("unknown key", DRUG + BASAL + 'dose = "2 mg/day"\ncolour = "red"\n', "basal.colour",
     "unknown key"),
    ("huge", DRUG + BASAL + 'dose = "500 mg/day"\n', "caps.ng_24h", "above the cap"),
    ("over the caps", DRUG + BASAL + 'dose = "2 mg/day"\n[patient]\n'
     'bolus = "1 mg over 10 min"\nlockout = "1 h"\nmax_per_day = 24\n[caps]\nper_day = "3 mg"\n',
     "caps.ng_24h", "above the cap"),
    ("a time in kg", DRUG + BASAL + 'dose = "2 mg/day"\n[patient]\nbolus = "0.1 mg over 10 min"'
     '\nlockout = "2 kg"\nmax_per_day = 6\n', "patient.lockout", "unknown time unit"),
    ("too many segments", '[drug]\nname = "baclofen"\nconcentration = "2000 mcg/mL"\n'
     '[basal]\nmode = "flex"\nsegments = [%s]\n' % FLEX, "basal.segments", "at most 24"),
    ("not TOML", "this is = = not toml", "not valid TOML", ""),
]


@pytest.mark.parametrize("name,text,field,words", TOML, ids=[t[0] for t in TOML])
def test_plan_check_refuses_a_bad_file(tmp_path, capsys, name, text, field, words):
    from pumprig import cli

    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc = cli.main(["plan", "check", str(path)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert err.startswith("pumprig: ") and err.count("\n") == 1, err
    assert field in err and words in err, err
    assert "Traceback" not in err + out


def test_plan_check_accepts_the_examples(capsys):
    from pumprig import cli

    for name in sorted(os.listdir(os.path.join(ROOT, "examples"))):
        if name.endswith(".toml"):
            assert cli.main(["plan", "check", os.path.join(ROOT, "examples", name)]) == 0, name
    capsys.readouterr()
