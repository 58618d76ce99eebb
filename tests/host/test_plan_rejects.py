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
    ("over the 24 h cap", w(caps={"ng_24h": 2_500_000}), "basal", "above caps.ng_24h"),
    ("over the drug ceiling", w(caps={"ng_24h": 30_000_000}), "caps.ng_24h", "ceiling"),
    ("over the 1 h cap", w(caps={"ng_24h": 3_000_000, "ng_1h": 10}), "patient",
     "in the worst hour"),
    ("unknown key", w(extra=1), "extra", "unknown key"),
    ("unknown nested key", w(patient=dict(PAT, x=1)), "patient.x", "unknown key"),
    ("unknown drug not declared custom", {"drug": "fentanyl", "conc_ng_ml": 1000,
                                          "basal": {"kind": "continuous", "ng_day": 100}},
     "drug", "not a listed drug"),
    ("custom drug without caps", {"drug": "fentanyl", "custom_drug": True, "conc_ng_ml": 1000,
                                  "basal": {"kind": "continuous", "ng_day": 100}},
     "caps.ng_24h", "required"),
    ("custom drug without an hourly cap", {"drug": "fentanyl", "custom_drug": True,
                                           "conc_ng_ml": 1000, "caps": {"ng_24h": 1000},
                                           "basal": {"kind": "continuous", "ng_day": 100}},
     "caps.ng_1h", "required"),
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
    ("bad drug name", w(drug="Morphine!"), "drug", "did you mean morphine?"),
    ("bad characters", w(drug="tracer!", custom_drug=True), "drug", "lowercase"),
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
    """A float in a signed clinician request is refused by the frame decoder (BAD_FRAME):
    the plan stays as it was. The same request with the integer goes through."""
    from binascii import crc32

    from _util import answers, login
    from pumpcore import auth

    b = FakeBoard(root=str(tmp_path) + "/")
    key = "11" * 32
    app = App(b, keys={"clinician": key})
    app.call("plan.set", {"plan": P5}, "clinician", "p", 0)
    crc = app.plan_crc()
    cs = login(app, key, now_ms=0)

    def signed(rid, seq, number):
        body = proto.encode_request(rid, "plan.set", {"plan": P5})
        assert b'"ng_day":2000000}' in body
        body = body.replace(b'"ng_day":2000000}', b'"ng_day":%s}' % number)
        data = body[: body.rfind(b"*")] + b"|%d|" % seq
        data += auth.request_mac(cs.pad, data)
        return data + b"*%08x\n" % (crc32(data) & 0xFFFFFFFF)

    out = answers(app, signed("z1", 1, b"2000000.5"))
    assert [(f.id, f.name, f.body["code"]) for f in out] == [("z1", "err", proto.BAD_FRAME)]
    assert app.plan_crc() == crc
    # the control: the same signed request with the integer (seq 2) is run
    out = answers(app, signed("z2", 2, b"2000000"))
    assert [(f.id, f.name) for f in out] == [("z2", "ok")], out[0].body
    assert app.plan_crc() == crc


DRUG = '[drug]\nname = "morphine"\nconcentration = "10 mg/mL"\n'
BASAL = '[basal]\nmode = "continuous"\n'
FLEX = "".join('["%02d:%02d", "100 mcg/day"],' % (i * 50 // 60, i * 50 % 60) for i in range(25))
TOML = [
    ("wrong units", DRUG + BASAL + 'dose = "2 mL/day"\n', "basal.dose", "not a mass unit"),
    ("negative", DRUG + BASAL + 'dose = "-2 mg/day"\n', "basal.dose", "is negative"),
    ("NaN", DRUG + BASAL + 'dose = "nan mg/day"\n', "basal.dose", "cannot read"),
    ("a bare float", DRUG + BASAL + "dose = 2.5\n", "basal.dose", "has no unit"),
    ("unknown key", DRUG + BASAL + 'dose = "2 mg/day"\ncolour = "red"\n', "basal.colour",
     "unknown key"),
    ("huge", DRUG + BASAL + 'dose = "500 mg/day"\n', "basal.dose", "above caps.per_day 20 mg"),
    ("over the caps", DRUG + BASAL + 'dose = "2 mg/day"\n[patient]\n'
     'bolus = "1 mg over 10 min"\nlockout = "1 h"\nmax_per_day = 24\n[caps]\nper_day = "3 mg"\n',
     "patient.bolus", "above caps.per_day 3 mg"),
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


# --------------------------------------------------------------------------- issue 11

F1_TOML = (DRUG + BASAL + 'dose = "2 mg/day"\n[start]\nbolus = "50 mg over 1 h"\n'
           '[caps]\nper_day = "3 mg"\nper_hour = "0.5 mg"\n')
F2_TOML = (DRUG + BASAL + 'dose = "2 mg/day"\n[periodic]\ntimes = [%s]\n'
           'bolus = "0.4 mg over 1 min"\n[caps]\nper_day = "20 mg"\nper_hour = "0.5 mg"\n'
           % ", ".join('"10:%02d"' % i for i in range(12)))


def _check_file(tmp_path, capsys, text, *extra):
    from pumprig import cli

    path = tmp_path / "plan.toml"
    path.write_text(text)
    rc = cli.main(["plan", "check", str(path), *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_finding1_plan_check_refuses_a_start_bolus_outside_the_caps(tmp_path, capsys):
    """Issue 11 finding 1: the start bolus was left out of the cap check."""
    rc, out, err = _check_file(tmp_path, capsys, F1_TOML)
    assert rc == 1
    assert ("start.bolus: 50 mg over 1 h gives 50.005 mg in the worst hour (counted over 62 min "
            "in whole steps of 2.5 mcg, one step ahead, as the dose limiter does; start 50 mg, "
            "basal 2.778 mcg), above caps.per_hour 500 mcg") in err, err
    # the same on the firmware's door, through the host's conversion
    plan, _ = plans_parse(F1_TOML)
    with pytest.raises(planmod.PlanError) as ei:
        planmod.validate(plan, LIMITS)
    assert ei.value.field == "start" and ei.value.worst_ng == 50_005_000
    assert ei.value.parts == {"start": 50_000_000, "basal": 2778, "periodic": 0, "patient": 0}
    assert ei.value.cap == "caps.ng_1h" and ei.value.cap_ng == 500_000


def test_finding2_plan_check_refuses_a_periodic_burst(tmp_path, capsys):
    """Issue 11 finding 2: only one periodic bolus was counted in the worst hour."""
    rc, out, err = _check_file(tmp_path, capsys, F2_TOML)
    assert rc == 1
    assert ("periodic.bolus: 400 mcg over 1 min at 12 times a day gives 4.888 mg in the worst "
            "hour (counted over 62 min in whole steps of 2.5 mcg, one step ahead, as the dose "
            "limiter does; basal 86.112 mcg, periodic 4.8 mg), above caps.per_hour 500 mcg") in err


def plans_parse(text):
    import tomllib

    from pumprig import plans

    return plans.parse_plan(tomllib.loads(text))


def test_plan_check_shows_the_worst_windows_next_to_the_caps(capsys):
    from pumprig import cli

    p9 = os.path.join(ROOT, "examples", "p9-morphine-rich.toml")
    assert cli.main(["plan", "check", p9]) == 0
    out = capsys.readouterr().out
    # the exact worst windows, and as the plan check and the dose limiter count them (62 min
    # and 24 h 30 min, whole steps, one ahead): 24 h 30 min hold a third periodic bolus and
    # a fifth patient bolus
    assert "worst hour  283.334 mcg (cap 500 mcg; 287.5 mcg as the dose limiter counts it)" in out
    assert "worst 24 h  2.45 mg (cap 3 mg; 2.69375 mg as the dose limiter counts it)" in out, out
    assert cli.main(["plan", "check", "--json", p9]) == 0
    import json

    w = json.loads(capsys.readouterr().out)["summary"]["worst"]
    assert w["ng_1h"] == 283_334 and w["cap_ng_1h"] == 500_000
    assert w["parts_1h"] == {"start": 0, "basal": 83_334, "periodic": 100_000, "patient": 100_000}
    assert w["ng_24h"] == 2_450_000 and w["cap_ng_24h"] == 3_000_000
    assert w["counted_1h"] == 287_500 and w["counted_24h"] == 2_693_750


def test_plan_check_on_a_board_counts_a_prime_at_the_tip(tmp_path, capsys):
    """Offline, a prime's pump volume is the empty path the plan declares; --board uses the
    board json's pump_path_nl: a smaller path leaves part of the prime as drug."""
    text = ('catheter_volume = "0.1 mL"\n[drug]\nname = "baclofen"\nconcentration = "2000 mcg/mL"'
            '\n[start.prime]\npump = "0.2 mL"\ncatheter = "0.1 mL"\nrate = "1 mL/min"\n'
            '[basal]\nmode = "continuous"\ndose = "400 mcg/day"\n[caps]\nper_hour = "20 mcg"\n')
    rc, out, err = _check_file(tmp_path, capsys, text, "--board", "sim")
    assert rc == 0 and "worst hour  16.667 mcg (cap 20 mcg; 17.5 mcg as the dose" in out, out + err
    # sim.json's pump path holds 0.2 mL; a board with none would count the pump part as drug
    rc, out, err = _check_file(tmp_path, capsys, text, "--board", "nosuchboard")
    assert rc == 1 and "--board: no board 'nosuchboard'" in err, err
    # a prime larger than the declared catheter: the excess reaches the patient
    rc, out, err = _check_file(tmp_path, capsys, text.replace('catheter = "0.1 mL"',
                                                                'catheter = "0.2 mL"'))
    assert rc == 1 and "start.prime: a prime of 0.400 mL at 1000 uL/min gives" in err, err
    assert "above caps.per_hour 20 mcg" in err, err


NAMES = [  # (name in the file, did you mean) -- issue 11 finding 7
    ("baclofen-2", "baclofen"), ("Baclofen ", "baclofen"), ("ziconotide-x", "ziconotide"),
    ("morfine", "morphine"), ("aclofen", "baclofen"),  # the last one: difflib, host only
]


@pytest.mark.parametrize("name,drug", NAMES, ids=[n[0] for n in NAMES])
def test_finding7_plan_check_refuses_near_misses(tmp_path, capsys, name, drug):
    """Issue 11 finding 7: 'baclofen-2' escaped baclofen's rules (ceiling, no patient bolus)."""
    text = ('[drug]\nname = "%s"\nconcentration = "2 mg/mL"\ncustom = true\n[basal]\n'
            'mode = "continuous"\ndose = "50 mg/day"\n[patient]\nbolus = "0.1 mg over 10 min"\n'
            'lockout = "2 h"\nmax_per_day = 6\n[caps]\nper_day = "60 mg"\nper_hour = "5 mg"\n'
            % name)
    rc, out, err = _check_file(tmp_path, capsys, text)
    assert rc == 1
    assert err.strip().endswith("drug.name: unknown drug %r: did you mean %s?" % (name, drug)), err


def test_a_custom_drug_in_a_plan_file(tmp_path, capsys):
    base = ('[drug]\nname = "tracer"\nconcentration = "1 mg/mL"\n%s[basal]\nmode = "continuous"'
            '\ndose = "240 mcg/day"\n[caps]\nper_day = "300 mcg"\n%s')  # 10.5 mcg in 62 min
    rc, out, err = _check_file(tmp_path, capsys, base % ("", 'per_hour = "11 mcg"\n'))
    assert rc == 1 and "drug.name: 'tracer' is not a listed drug" in err, err
    assert "custom = true in [drug]" in err, err
    rc, out, err = _check_file(tmp_path, capsys, base % ("custom = true\n", ""))
    assert rc == 1 and "caps.per_hour: is required for a drug without built-in limits" in err
    rc, out, err = _check_file(tmp_path, capsys, base % ('custom = "yes"\n', ""))
    assert rc == 1 and "drug.custom: write custom = true" in err, err
    rc, out, err = _check_file(tmp_path, capsys, base % ("custom = true\n",
                                                         'per_hour = "11 mcg"\n'), "--json")
    import json

    assert rc == 0 and json.loads(out)["plan"]["custom_drug"] is True
    rc, out, err = _check_file(tmp_path, capsys, (base % ("custom = true\n", 'per_hour = "11 mcg"\n'))
                               .replace("tracer", "baclofen"))
    assert rc == 1 and "drug.custom: baclofen is a listed drug" in err, err
