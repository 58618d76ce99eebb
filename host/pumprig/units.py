"""Human units for plans, bench and simulate: one parser, one set of spellings, one formatter.

Every quantity the host reads from a person goes through here: volumes ("20 mL"), masses
("50 mcg"), concentrations ("2000 mcg/mL"), dose rates ("400 mcg/day"), volume rates
("0.5 mL/day", "1 uL/h") and durations ("90 min", "1h30m", "2 d"). The result is an integer in
the unit the firmware uses (nL, ng, ng/mL, ng/day, nL/day, s); a value the pump cannot
represent (more than 0.1 % lost to rounding) is refused rather than silently rounded.

A reading that fails raises `UnitError`, a `ValueError` (and a `PumprigError`, so the CLI
prints it as one `pumprig:` line) whose message names the field and the text given, and for an
unknown unit the nearest known spelling ("did you mean 'mL'?"). `did_you_mean` does the same for
any word against a list (plan keys, drug names, table names).

The `format_*` functions go the other way, for messages and reports: 20000000 nL -> "20 mL".
"""

from __future__ import annotations

import difflib
import re
from decimal import Decimal, InvalidOperation

from .errors import PumprigError

__all__ = [
    "UnitError", "did_you_mean", "volume_nl", "mass_ng", "concentration_ng_ml",
    "dose_rate_ng_day", "volume_rate_nl_day", "duration_s", "format_volume_nl",
    "format_mass_ng", "format_concentration", "format_dose_rate", "format_volume_rate",
    "format_duration_s", "MASS_NG", "VOLUME_NL", "TIME_S", "PER_DAY",
]


class UnitError(PumprigError, ValueError):
    """A quantity that cannot be read. `given` is the text as written, `field` where it was."""

    def __init__(self, message: str, given=None, field: str | None = None):
        super().__init__(message)
        self.given = given
        self.field = field


# Spellings are matched after `_norm` (lower case, micro sign -> u, no spaces around "/").
MASS_NG = {"ng": 1, "mcg": 1_000, "ug": 1_000, "mg": 1_000_000, "g": 1_000_000_000}
VOLUME_NL = {"nl": 1, "ul": 1_000, "ml": 1_000_000}
TIME_S = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
          "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
          "d": 86_400, "day": 86_400, "days": 86_400, "w": 604_800, "week": 604_800,
          "weeks": 604_800}
PER_DAY = {"day": 1, "d": 1, "24h": 1, "h": 24, "hr": 24, "hour": 24, "min": 1440, "m": 1440}

# How a unit is written back to a person (the spelling suggested in "did you mean").
_SHOWN = {"ng": "ng", "mcg": "mcg", "ug": "ug", "mg": "mg", "g": "g", "nl": "nL", "ul": "uL",
          "ml": "mL", "day": "day", "d": "d", "h": "h", "min": "min", "s": "s"}

_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?|\.[0-9]+(?:e[-+]?[0-9]+)?)"


def did_you_mean(word, choices, shown=None, cutoff: float = 0.6) -> str:
    """`" (did you mean 'dose'?)"` for the closest of `choices`, or `""` when none is close.
    `shown` maps a choice to how it is written back (defaults to the choice itself)."""
    if not isinstance(word, str):
        return ""
    choices = list(choices)
    key = word.strip().lower()
    lowered = {c.lower(): c for c in choices}
    if key in lowered and lowered[key] != word:
        best = lowered[key]  # only case or blanks differ
    else:
        close = difflib.get_close_matches(key, list(lowered), n=1, cutoff=cutoff)
        if not close:
            return ""
        best = lowered[close[0]]
    if shown:
        best = shown.get(best, best)
    return f" (did you mean {best!r}?)"


def _norm(text: str) -> str:
    s = text.strip().lower().replace("\u00b5", "u").replace("\u03bc", "u")
    s = re.sub(r"\s+per\s+", "/", s)
    s = re.sub(r"\s*/\s*", "/", s)
    return s


def _text(value, field, example) -> str:
    """The value as text; TOML/JSON numbers are accepted and read like the same digits."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise UnitError(f"{field}: expected text like {example!r}, got {value!r}", value, field)
    return str(value)


def _number(num: str, given, field) -> Decimal:
    try:
        d = Decimal(num)
    except InvalidOperation:
        raise UnitError(f"{field}: {given!r} is not a number", given, field) from None
    if not d.is_finite():
        raise UnitError(f"{field}: {given!r} is not a finite number", given, field)
    return d


def _whole(value: Decimal, given, field, what) -> int:
    iv = int(value.to_integral_value())
    if value != iv and abs(value - iv) * 1000 > abs(value):  # more than 0.1 % lost
        raise UnitError(f"{field}: {given!r} is below the resolution of the pump ({what})",
                        given, field)
    return iv


def _unit(unit: str, table: dict, given, field, what: str, known: str) -> int:
    if unit in table:
        return table[unit]
    hint = did_you_mean(unit, table, _SHOWN, cutoff=0.5)  # units are short
    raise UnitError(f"{field}: unknown {what} unit {unit!r} in {given!r}{hint}; use {known}",
                    given, field)


def _split(value, field, example, default_unit):
    """-> (number text, unit text, original)."""
    given = _text(value, field, example)
    s = _norm(given)
    if s.startswith("-"):
        raise UnitError(f"{field}: {given!r} is negative; write it like {example!r}", given, field)
    m = re.fullmatch(_NUMBER + r"\s*(.*)", s)
    if not m:
        raise UnitError(f"{field}: cannot read {given!r}; write it like {example!r}", given, field)
    unit = m.group(2)
    if not unit:
        if default_unit is None:
            raise UnitError(f"{field}: {given!r} has no unit; write it like {example!r}",
                            given, field)
        unit = default_unit
    return m.group(1), unit, given


def _simple(value, field, example, table, what, known, default_unit) -> int:
    num, unit, given = _split(value, field, example, default_unit)
    scale = _unit(unit, table, given, field, what, known)
    return _whole(_number(num, given, field) * scale, given, field, what)


def volume_nl(value, field: str = "volume", default_unit: str | None = None) -> int:
    """'20 mL', '10 uL', '500 nL' -> nL."""
    return _simple(value, field, "20 mL", VOLUME_NL, "volume", "nL, uL, mL", default_unit)


def mass_ng(value, field: str = "mass", default_unit: str | None = None) -> int:
    """'50 mcg', '0.1 mg' -> ng."""
    return _simple(value, field, "50 mcg", MASS_NG, "mass", "ng, mcg, mg", default_unit)


def _ratio(value, field, example, top, what, known_top, default_unit):
    num, unit, given = _split(value, field, example, default_unit)
    if "/" not in unit:
        raise UnitError(f"{field}: {given!r} is not a {what}; write it like {example!r}",
                        given, field)
    a, b = unit.split("/", 1)
    scale = _unit(a, top, given, field, what, known_top)
    return _number(num, given, field), scale, b, given


def concentration_ng_ml(value, field: str = "concentration") -> int:
    """'2000 mcg/mL', '2 mg/mL' -> ng/mL."""
    d, scale, per, given = _ratio(value, field, "2000 mcg/mL", MASS_NG, "concentration",
                                  "ng, mcg, mg per mL", None)
    per_ml = _unit(per, {"ml": 1, "ul": 1000}, given, field, "concentration", "per mL")
    return _whole(d * scale * per_ml, given, field, "concentration")


def dose_rate_ng_day(value, field: str = "dose") -> int:
    """'400 mcg/day', '20 mcg/h', '0.5 mg per day' -> ng/day."""
    d, scale, per, given = _ratio(value, field, "400 mcg/day", MASS_NG, "dose rate",
                                  "mcg/day, mg/day, mcg/h", None)
    per_day = _unit(per, PER_DAY, given, field, "dose rate", "/day, /h")
    return _whole(d * scale * per_day, given, field, "dose rate")


def volume_rate_nl_day(value, field: str = "rate", default_unit: str | None = None) -> int:
    """'0.5 mL/day', '1 uL/h', '2 mL/min' -> nL/day. A bare number takes `default_unit`
    (e.g. 'nl/day') or, without one, is refused so that '1' never silently means 1 nL/day."""
    d, scale, per, given = _ratio(value, field, "0.5 mL/day", VOLUME_NL, "volume rate",
                                  "nL, uL, mL per day or h", default_unit)
    per_day = _unit(per, PER_DAY, given, field, "volume rate", "/day, /h, /min")
    return _whole(d * scale * per_day, given, field, "volume rate")


def duration_s(value, field: str = "duration", default_unit: str | None = None,
               whole: bool = True):
    """'90 min', '1.5 h', '2 d', '1h30m', '2d 4h' -> seconds: an int, or with whole=False a float
    (for waits and sample periods). An int value (TOML) is taken as seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UnitError(f"{field}: {value!r} is negative", value, field)
        return value
    given = _text(value, field, "90 min")
    s = _norm(given).replace(" ", "")
    if s.startswith("-"):
        raise UnitError(f"{field}: {given!r} is negative; write it like '90 min'", given, field)
    if re.fullmatch(_NUMBER, s):
        if default_unit is None:
            raise UnitError(f"{field}: {given!r} has no unit; write it like '90 min'",
                            given, field)
        s += default_unit
    parts = re.findall(_NUMBER + r"([a-z]*)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise UnitError(f"{field}: cannot read the time {given!r}; write it like '90 min', "
                        "'1h30m' or '2 d'", given, field)
    total = Decimal(0)
    for num, unit in parts:
        if not unit:
            raise UnitError(f"{field}: {num!r} in {given!r} has no unit", given, field)
        total += _number(num, given, field) * _unit(unit, TIME_S, given, field, "time",
                                                    "s, min, h, d")
    if not whole:
        return float(total)
    return _whole(total, given, field, "time")


# --- back to people -------------------------------------------------------------------------

def _g(x) -> str:
    """A number without float noise: 0.1 not 0.1000000001, 20 not 20.0."""
    d = Decimal(x) if not isinstance(x, float) else Decimal(repr(x))
    d = d.quantize(Decimal("0.000001")).normalize() if d != d.to_integral_value() else d
    s = format(d.normalize(), "f")
    return s


def _pick(value: int, steps) -> str:
    """The largest unit in which `value` is at least 1 (or the smallest)."""
    for scale, name in steps:
        if abs(value) >= scale:
            return f"{_g(Decimal(value) / scale)} {name}"
    scale, name = steps[-1]
    return f"{_g(Decimal(value) / scale)} {name}"


_MASS_STEPS = [(1_000_000_000, "g"), (1_000_000, "mg"), (1_000, "mcg"), (1, "ng")]
_VOL_STEPS = [(1_000_000, "mL"), (1_000, "uL"), (1, "nL")]


def format_volume_nl(nl: int) -> str:
    """20000000 -> '20 mL', 500 -> '500 nL'."""
    return _pick(nl, _VOL_STEPS)


def format_mass_ng(ng: int) -> str:
    """100000 -> '100 mcg'."""
    return _pick(ng, _MASS_STEPS)


def format_concentration(ng_ml: int) -> str:
    """2000000 -> '2 mg/mL'."""
    return _pick(ng_ml, _MASS_STEPS) + "/mL"


def format_dose_rate(ng_day: int) -> str:
    """400000 -> '400 mcg/day'."""
    return _pick(ng_day, _MASS_STEPS) + "/day"


def format_volume_rate(nl_day: int) -> str:
    """500000 -> '0.5 mL/day' (below 1 mL/day in uL/day or nL/day)."""
    return _pick(nl_day, _VOL_STEPS) + "/day"


def format_duration_s(s) -> str:
    """5400 -> '1.5 h', 172800 -> '2 days', 90 -> '1.5 min'."""
    s = Decimal(repr(s)) if isinstance(s, float) else Decimal(s)
    for scale, one, many in ((86_400, "day", "days"), (3600, "h", "h"), (60, "min", "min")):
        if abs(s) >= scale:
            v = s / scale
            return f"{_g(v)} {one if v == 1 else many}"
    return f"{_g(s)} s"
