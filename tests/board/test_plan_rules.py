"""Issue 11, findings 1, 2 and 7, on the firmware's own door: `plan.set` through App.call on a
fake board (CPython and MicroPython). The plan check counts every dose in its worst hour and
worst 24 h (pumpcore.worst), and a drug is a listed one exactly or a declared custom one.
"""

from _util import raises, rmtree, tmpdir
from fakeboard import FakeBoard
from pumpcore import plan as planmod
from pumpcore import proto, worst
from pumpcore.app import App

P5 = {"drug": "morphine", "conc_ng_ml": 10_000_000,
      "basal": {"kind": "continuous", "ng_day": 2_000_000},
      "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 7200, "max_24h": 6},
      "caps": {"ng_24h": 3_000_000}}

# finding 1: morphine 10 mg/mL, basal 2 mg/day, start bolus 50 mg over 1 h, caps 3 mg and 0.5 mg/h
F1 = {"drug": "morphine", "conc_ng_ml": 10_000_000,
      "basal": {"kind": "continuous", "ng_day": 2_000_000},
      "start": {"kind": "bolus", "ng": 50_000_000, "dur_s": 3600},
      "caps": {"ng_24h": 3_000_000, "ng_1h": 500_000}}
# finding 2: twelve periodic boluses of 0.4 mg one minute apart under 0.5 mg/h
F2 = {"drug": "morphine", "conc_ng_ml": 10_000_000,
      "basal": {"kind": "continuous", "ng_day": 2_000_000},
      "periodic": {"times_min": [600 + i for i in range(12)], "ng": 400_000, "dur_s": 60},
      "caps": {"ng_24h": 20_000_000, "ng_1h": 500_000}}
# finding 7: "baclofen-2" at 50 mg/day with patient boluses
F7 = {"drug": "baclofen-2", "conc_ng_ml": 2_000_000,
      "basal": {"kind": "continuous", "ng_day": 50_000_000},
      "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 7200, "max_24h": 6},
      "caps": {"ng_24h": 60_000_000, "ng_1h": 5_000_000}}


def _with_app(fn, config=None):
    root = tmpdir()
    try:
        b = FakeBoard(config=config, root=root + "/")
        app = App(b, keys={})
        app.call("plan.set", {"plan": P5}, "clinician", "p0", 0)
        crc = app.plan_crc()
        fn(app)
        assert app.plan_crc() == crc  # a refused plan changes nothing
    finally:
        rmtree(root)


def _refused(app, plan, req="r1"):
    e = raises(proto.CommandError, app.call, "plan.set", {"plan": plan}, "clinician", req, 0)
    assert e.code == proto.PLAN_INVALID, e.message
    return e.message


def test_finding1_a_start_bolus_outside_the_caps_is_refused():
    def check(app):
        msg = _refused(app, F1)
        assert msg.startswith("start: "), msg
        # counted as the dose limiter counts: 62 min (50 mg and 2 min of basal), one step more
        assert "50.005 mg in the worst hour (counted over 62 min in whole steps of 2.5 mcg" in msg
        assert "above caps.ng_1h 500 mcg" in msg, msg
        # within the hourly cap but not the daily one: the 24 h window holds it too
        # (2.5 mg over 12 h, then 12 h of basal: 3.5 mg)
        f = dict(F1, start={"kind": "bolus", "ng": 2_500_000, "dur_s": 43_200},
                 caps={"ng_24h": 3_000_000, "ng_1h": 500_000})
        msg = _refused(app, f, "r2")
        assert msg.startswith("start: ") and "above caps.ng_24h 3 mg" in msg, msg

    _with_app(check)


def test_finding2_a_periodic_burst_against_the_hourly_cap_is_refused():
    def check(app):
        msg = _refused(app, F2)
        assert msg.startswith("periodic: "), msg
        assert "; basal 86.112 mcg, periodic 4.8 mg)" in msg and "above caps.ng_1h" in msg, msg
        # the same boluses an hour and a half apart fit: one per hour at most
        ok = dict(F2, periodic={"times_min": [90 * i for i in range(12)], "ng": 400_000,
                                "dur_s": 60})
        e = planmod.validate(ok, app.limits())
        assert e["caps"]["ng_1h"] == 500_000

    _with_app(check)


def test_a_prime_counts_only_what_leaves_the_tip():
    """The prime's pump and catheter volumes are empty (saline/air) up to what the board's pump
    path and the plan's catheter hold: pushed out, they bring no drug; beyond that they do."""
    p6 = {"drug": "baclofen", "conc_ng_ml": 2_000_000, "catheter_nl": 100_000,
          "basal": {"kind": "continuous", "ng_day": 400_000},
          "start": {"kind": "prime", "pump_nl": 200_000, "catheter_nl": 100_000,
                    "nl_min": 1_000_000},
          "caps": {"ng_24h": 1_000_000, "ng_1h": 20_000}}

    def accepted(app):
        assert app.limits()["pump_path_nl"] == 200_000
        assert planmod.validate(p6, app.limits())["caps"]["ng_1h"] == 20_000

    _with_app(accepted)
    small = FakeBoard().config
    small["pump_path_nl"] = 50_000  # a board whose path holds a quarter of what the prime says

    def refused(app):
        msg = _refused(app, p6)
        assert msg.startswith("start: ") and "start 300 mcg" in msg, msg

    _with_app(refused, small)


def test_finding7_near_misses_of_a_listed_drug_are_refused():
    def check(app):
        msg = _refused(app, F7)
        assert msg == "drug: unknown drug 'baclofen-2': did you mean baclofen?", msg
        # declaring it custom does not help: it is still a near miss
        assert "did you mean baclofen?" in _refused(app, dict(F7, custom_drug=True), "r2")
        for name, drug in (("Baclofen ", "baclofen"), ("ziconotide-x", "ziconotide"),
                           ("morfine", "morphine"), ("BACLOFEN", "baclofen"),
                           ("hydromorphone2", "hydromorphone")):
            msg = _refused(app, dict(F7, drug=name, custom_drug=True), "r3")
            assert msg.endswith("did you mean %s?" % drug), (name, msg)

    _with_app(check)


def test_a_custom_drug_says_so_and_states_both_caps():
    tracer = {"drug": "tracer", "conc_ng_ml": 1_000_000,
              "basal": {"kind": "continuous", "ng_day": 240_000},
              "caps": {"ng_24h": 300_000, "ng_1h": 11_000}}  # 10.5 mcg counted in 62 min

    def check(app):
        assert "custom_drug" in _refused(app, tracer)
        custom = dict(tracer, custom_drug=True)
        assert _refused(app, dict(custom, caps={"ng_24h": 300_000}), "r2").startswith(
            "caps.ng_1h: is required")
        # a listed drug may not take the custom door around its rules
        msg = _refused(app, dict(F7, drug="baclofen", custom_drug=True), "r3")
        assert msg.startswith("custom_drug: baclofen is a listed drug"), msg
        assert "custom_drug: must be true or false" in _refused(
            app, dict(custom, custom_drug=1), "r4")
        res = app.call("plan.set", {"plan": custom}, "clinician", "r5", 0)
        assert res["plan"]["custom_drug"] is True and res["plan"]["drug"] == "tracer"
        # distinct drugs that only look alike are custom drugs, not near misses
        for name in ("ropivacaine", "levobupivacaine", "hydrocodone", "hil-dye"):
            assert worst.near_drug(name, planmod.DRUGS) is None, name
        app.call("plan.set", {"plan": P5}, "clinician", "r6", 0)  # back to P5 for the caller

    _with_app(check)


def test_a_listed_drug_plan_keeps_its_crc():
    """custom_drug appears in the canonical plan only when it is true: every existing plan's
    CRC (and the pinned P1 CRC of the docs) is unchanged."""
    p1 = planmod.validate({"drug": "baclofen", "conc_ng_ml": 2_000_000,
                           "basal": {"kind": "continuous", "ng_day": 400_000}})
    assert "custom_drug" not in p1 and planmod.crc(p1) == "e28a3d80"  # per_hour defaults to per_day
