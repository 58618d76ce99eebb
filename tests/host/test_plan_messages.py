"""Issue 14, "messages in internal terms": a plan file's mistakes are answered in the plan file's
own field names and human units, key and table typos get "did you mean", and a near miss of a
drug name is answered with the drug. Each case failed on the old code (quoted in its id)."""

import pytest
from pumprig import cli

DRUG = '[drug]\nname = "morphine"\nconcentration = "10 mg/mL"\n'
BASAL = '[basal]\nmode = "continuous"\ndose = "2 mg/day"\n'

CASES = [
    # old: "basal.ng_day: must be at most 10000000000, got 20000000000"
    ("huge dose", DRUG + '[basal]\nmode = "continuous"\ndose = "20 g/day"\n',
     "basal.dose: must be at most 10 g/day, not 20 g/day"),
    # old: "basal.dose: expected text like '400 mcg/day'"
    ("dosee", DRUG + '[basal]\nmode = "continuous"\ndosee = "2 mg/day"\n',
     "basal.dosee: unknown key (did you mean 'dose'?)"),
    # old: "basal: is required (...)"
    ("basall", DRUG + '[basall]\nmode = "continuous"\ndose = "2 mg/day"\n',
     "basall: unknown table (did you mean 'basal'?)"),
    # old: "caps.ng_24h: is required for a drug without built-in limits" (as caps.per_day)
    ("baclofen blank", '[drug]\nname = "baclofen "\nconcentration = "2 mg/mL"\n' + BASAL,
     "drug.name: unknown drug 'baclofen ': did you mean baclofen?"),
    ("unit typo", DRUG + BASAL + '[reservoir]\nfill = "20 mk"\n',
     "reservoir.fill: unknown volume unit 'mk' in '20 mk' (did you mean 'mL'?)"),
    ("lockout too short", DRUG + BASAL + '[patient]\nbolus = "0.1 mg over 10 min"\n'
     'lockout = "30 s"\nmax_per_day = 4\n', "patient.lockout: must be at least 1 min, not 30 s"),
    ("refill_by days", DRUG + BASAL + '[reservoir]\nrefill_by = "500 days"\n',
     "reservoir.refill_by: must be at most 400 days, not 500 days"),
    ("mode typo", DRUG + '[basal]\nmode = "continous"\ndose = "2 mg/day"\n',
     "(did you mean 'continuous'?)"),
    ("key of another mode", DRUG + BASAL + 'segments = [["00:00", "1 mg/day"]]\n',
     "basal.segments: not used with mode = 'continuous'"),
    ("low below empty", DRUG + BASAL + '[reservoir]\nlow = "1 mL"\nempty = "2 mL"\n',
     "reservoir.empty: must not be above reservoir.low"),
    ("missing dose", DRUG + '[basal]\nmode = "continuous"\n', "basal.dose: is required"),
    # old: passed `plan check`; simulate then failed with "volume_nl must be an integer
    # 1..1000000000 (BAD_ARGS)"
    ("empty fill", DRUG + BASAL + '[reservoir]\nfill = "0 mL"\n',
     "reservoir.fill: '0 mL' is no volume to fill; write it like '20 mL'"),
    ("empty refill", DRUG + BASAL + '[scenario]\nevents = [{ at = "1 d", refill = "0 mL" }]\n',
     "scenario.events[0].refill: '0 mL' is no volume to fill"),
]


@pytest.mark.parametrize("text, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_check_speaks_the_plan_files_terms(tmp_path, capsys, text, words):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    rc = cli.main(["plan", "check", str(path)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert err.startswith("pumprig: ") and err.count("\n") == 1, err
    assert words in err, err
    # old: a key or table typo, or a unit, was reported without the file's name
    assert err.startswith("pumprig: %s: " % path), err
    assert "_nl" not in err and "_ng" not in err and "_s:" not in err, err
    assert "Traceback" not in out + err
