"""The one units module (issue 14: "three separate unit parsers disagree"; issue 16: units in one
module). Plans, bench and simulate read quantities through `pumprig.units`."""

import pytest
from pumprig import units
from pumprig.errors import PumprigError
from pumprig.units import UnitError


@pytest.mark.parametrize("text, nl", [
    ("20 mL", 20_000_000), ("20mL", 20_000_000), ("10 uL", 10_000), ("10 µL", 10_000),
    ("10 μl", 10_000), ("500 nL", 500), (".5 ml", 500_000), ("1e-3 mL", 1_000),
])
def test_volume(text, nl):
    assert units.volume_nl(text) == nl


@pytest.mark.parametrize("text, ng", [("50 mcg", 50_000), ("0.1 mg", 100_000), ("7 ug", 7_000),
                                      ("2 g", 2_000_000_000), ("3 ng", 3)])
def test_mass(text, ng):
    assert units.mass_ng(text) == ng


@pytest.mark.parametrize("text, v", [
    ("400 mcg/day", 400_000), ("20 mcg/h", 480_000), ("0.5 mg per day", 500_000),
    ("1 mg / 24h", 1_000_000),
])
def test_dose_rate(text, v):
    assert units.dose_rate_ng_day(text) == v


@pytest.mark.parametrize("text, v", [
    ("0.5 mL/day", 500_000), ("1 uL/h", 24_000), ("2 mL/min", 2_880_000_000),
    ("5 nL/d", 5),
])
def test_volume_rate(text, v):
    assert units.volume_rate_nl_day(text) == v


def test_concentration():
    assert units.concentration_ng_ml("2000 mcg/mL") == 2_000_000
    assert units.concentration_ng_ml("2 mg/mL") == 2_000_000


@pytest.mark.parametrize("text, s", [
    ("90 min", 5400), ("1.5 h", 5400), ("2 d", 172_800), ("1h30m", 5400), ("2d 4h", 187_200),
    ("30s", 30), ("1 week", 604_800), (45, 45),
])
def test_duration(text, s):
    assert units.duration_s(text) == s


def test_duration_float_and_default_unit():
    assert units.duration_s("0.5 s", whole=False) == 0.5
    assert units.duration_s("12", default_unit="s") == 12


def test_bare_number_needs_a_unit_unless_a_default_is_given():
    """Finding: `bench --rate 1` silently meant 1 nL/day. Without a default unit it is refused."""
    with pytest.raises(UnitError, match="has no unit"):
        units.volume_rate_nl_day("1")
    assert units.volume_rate_nl_day("1", default_unit="nl/day") == 1
    with pytest.raises(UnitError, match="has no unit"):
        units.volume_nl("20")


def test_unknown_unit_suggests_the_nearest():
    with pytest.raises(UnitError) as e:
        units.volume_nl("20 mk", "reservoir.fill")
    msg = str(e.value)
    assert "reservoir.fill" in msg and "'20 mk'" in msg and "did you mean 'mL'?" in msg
    assert e.value.given == "20 mk" and e.value.field == "reservoir.fill"
    with pytest.raises(UnitError, match="did you mean 'mcg'"):
        units.dose_rate_ng_day("400 mcgg/day")
    with pytest.raises(UnitError, match="did you mean 'min'"):
        units.duration_s("90 mni")
    with pytest.raises(UnitError, match="did you mean 'day'"):
        units.dose_rate_ng_day("400 mcg/dya")


def test_errors_are_value_errors_and_cli_errors():
    """A UnitError is a ValueError (library use) and a PumprigError (one `pumprig:` line)."""
    with pytest.raises(ValueError):
        units.mass_ng("lots")
    with pytest.raises(PumprigError):
        units.mass_ng("lots")


@pytest.mark.parametrize("bad", ["-5 mL", "nan mL", "inf mL", "", "mL", True, None, [1]])
def test_refused(bad):
    with pytest.raises(UnitError):
        units.volume_nl(bad)


def test_below_resolution_is_refused_not_rounded():
    with pytest.raises(UnitError, match="resolution"):
        units.volume_nl("0.0001 nL")


def test_did_you_mean():
    assert units.did_you_mean("dosee", ["mode", "dose", "segments"]) == " (did you mean 'dose'?)"
    assert units.did_you_mean("basall", ["basal", "drug"]) == " (did you mean 'basal'?)"
    assert units.did_you_mean("zzzz", ["basal", "drug"]) == ""
    assert units.did_you_mean("baclofen ", ["baclofen", "morphine"]) == \
        " (did you mean 'baclofen'?)"


@pytest.mark.parametrize("f, v, text", [
    (units.format_volume_nl, 20_000_000, "20 mL"), (units.format_volume_nl, 500, "500 nL"),
    (units.format_mass_ng, 100_000, "100 mcg"), (units.format_dose_rate, 10_000_000_000,
                                                  "10 g/day"),
    (units.format_volume_rate, 500_000, "500 uL/day"), (units.format_concentration, 2_000_000,
                                                          "2 mg/mL"),
    (units.format_duration_s, 5400, "1.5 h"), (units.format_duration_s, 172_800, "2 days"),
    (units.format_duration_s, 30, "30 s"),
])
def test_format(f, v, text):
    assert f(v) == text


def test_round_trip():
    for nl in (1, 999, 1_000, 20_000_000, 123_456):
        assert units.volume_nl(units.format_volume_nl(nl)) == nl
