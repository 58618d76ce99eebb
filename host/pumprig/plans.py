"""Dose plans as TOML files in human units -> the canonical plan the firmware runs.

The rules live in `pumpcore.plan` (the same module the firmware imports); this module only
parses units ("400 mcg/day", "2000 mcg/mL", "0.1 mg over 10 min", "06:00") into the integers
of the canonical form and reports errors by TOML field. See docs/plans.md.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
import tomllib
from pathlib import Path

from pumpcore import plan as core
from pumpcore.schedule import DAY_MS, Clock, Schedule

from . import units
from .errors import PlanFileError
from .units import MASS_NG, PER_DAY, TIME_S, VOLUME_NL, did_you_mean  # noqa: F401 (re-exported)

# The keys each table of a plan file may hold (a key not listed gets "did you mean").
TOP_KEYS = ("title", "drug", "basal", "catheter_volume", "start", "periodic", "patient",
            "reservoir", "caps", "scenario")
DRUG_KEYS = ("name", "concentration", "custom")
BASAL_KEYS = ("mode", "dose", "segments", "increase", "every", "steps", "minimum_rate")
START_KEYS = ("bolus", "prime")
PRIME_KEYS = ("pump", "catheter", "rate")
PERIODIC_KEYS = ("times", "bolus")
PATIENT_KEYS = ("bolus", "lockout", "max_per_day")
RESERVOIR_KEYS = ("low", "empty", "refill_by", "on_empty", "fill")
CAPS_KEYS = ("per_day", "per_hour")
SCENARIO_KEYS = ("events",)
EVENT_KEYS = ("at", "refill", "concentration", "bolus")


class _Field:
    """One TOML table of the plan file and the keys it may hold: a key it may not hold is an
    error with the nearest allowed key, before any value is read (so a typo `dosee` is not
    reported as a missing `dose`)."""

    def __init__(self, table, path, allowed=()):
        if not isinstance(table, dict):
            raise PlanFileError(f"{path}: must be a table, like [{path}]")
        self.t = table
        self.path = path
        for k in table:
            if k not in allowed:
                what = "table" if isinstance(table[k], dict) else "key"
                raise PlanFileError(f"{self.name(k)}: unknown {what}"
                                    f"{did_you_mean(k, allowed)}")

    def get(self, key, default=None):
        return self.t.get(key, default)

    def name(self, key):
        return f"{self.path}.{key}" if self.path else key

    def done(self):
        """Kept for the callers: unknown keys are refused when the table is opened."""


def _unit_error(fn):
    """A units reader whose UnitError becomes this module's PlanFileError (same message)."""
    def read(text, field, *a, **kw):
        if text is None:
            raise PlanFileError(f"{field}: is required")
        try:
            return fn(text, field, *a, **kw)
        except units.UnitError as e:
            raise PlanFileError(str(e)) from None
    read.__doc__ = fn.__doc__
    return read


_mass = _unit_error(units.mass_ng)
_volume = _unit_error(units.volume_nl)
_duration = _unit_error(units.duration_s)
_conc = _unit_error(units.concentration_ng_ml)
_dose_rate = _unit_error(units.dose_rate_ng_day)
_volume_rate = _unit_error(units.volume_rate_nl_day)


def _match(text, field, pattern, example):
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise PlanFileError(f"{field}: expected text like {example!r}")
    s = str(text).strip().lower()
    m = re.fullmatch(pattern, s)
    if not m:
        raise PlanFileError(f"{field}: cannot read {text!r}; write it like {example!r}")
    return m


def parse_mass_ng(text, field="mass") -> int:
    return _mass(text, field)


def parse_volume_nl(text, field="volume") -> int:
    return _volume(text, field)


def parse_fill_nl(text, field) -> int:
    """A fill or refill volume: above 0 (the rig refuses an empty refill)."""
    nl = _volume(text, field)
    if nl <= 0:
        raise PlanFileError(f"{field}: {text!r} is no volume to fill; write it like '20 mL'")
    return nl


def parse_duration_s(text, field="duration") -> int:
    return _duration(text, field)


def parse_conc(text, field="concentration") -> int:
    """'2000 mcg/mL' -> ng/mL."""
    return _conc(text, field)


def parse_dose_rate_ng_day(text, field="dose") -> int:
    return _dose_rate(text, field)


def parse_volume_rate_nl_day(text, field="rate") -> int:
    return _volume_rate(text, field)


def parse_dose_over(text, field="bolus") -> tuple[int, int]:
    """'0.1 mg over 10 min' -> (ng, seconds)."""
    if not isinstance(text, str) or " over " not in text:
        raise PlanFileError(f"{field}: write a bolus like '0.1 mg over 10 min'")
    dose, dur = text.split(" over ", 1)
    return parse_mass_ng(dose, field), parse_duration_s(dur, field)


def parse_clock_min(text, field="time") -> int:
    m = _match(text, field, r"([0-9]{1,2}):([0-9]{2})", "06:00")
    h, mi = int(m.group(1)), int(m.group(2))
    if h > 23 or mi > 59:
        raise PlanFileError(f"{field}: {text!r} is not a time of day")
    return h * 60 + mi


def parse_percent(text, field="percent") -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _match(text, field, r"\+?([0-9]+)\s*%?", "20 %")
    return int(m.group(1))


def parse_date(text, field="date") -> int:
    """'2027-03-01' or '2027-03-01T08:00' (UTC) -> epoch seconds."""
    if isinstance(text, _dt.datetime):
        d = text
    elif isinstance(text, _dt.date):
        d = _dt.datetime(text.year, text.month, text.day)
    else:
        try:
            d = _dt.datetime.fromisoformat(str(text))
        except ValueError:
            raise PlanFileError(f"{field}: {text!r} is not a date like 2027-03-01") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp())


_MODE_KEYS = {"stopped": (), "continuous": ("dose",), "flex": ("segments",),
              "step": ("dose", "increase", "every", "steps")}


def _basal(t: _Field) -> dict:
    mode = t.get("mode")
    if mode not in _MODE_KEYS:
        raise PlanFileError(f"{t.name('mode')}: must be stopped, continuous, flex or step, "
                            f"not {mode!r}{did_you_mean(mode, _MODE_KEYS)}")
    for k in t.t:
        if k not in ("mode", "minimum_rate") + _MODE_KEYS[mode]:
            raise PlanFileError(f"{t.name(k)}: not used with mode = {mode!r} (it takes "
                                + (", ".join(_MODE_KEYS[mode]) or "no dose") + ")")
    if mode == "stopped":
        return {"kind": "stopped"}
    if mode == "continuous":
        return {"kind": "continuous", "ng_day": parse_dose_rate_ng_day(t.get("dose"), t.name("dose"))}
    if mode == "flex":
        segs = t.get("segments")
        if not isinstance(segs, list) or not segs:
            raise PlanFileError(f"{t.name('segments')}: list the segments as [\"HH:MM\", \"dose/day\"]")
        out = []
        for i, s in enumerate(segs):
            name = f"{t.name('segments')}[{i}]"
            if not isinstance(s, list) or len(s) != 2:
                raise PlanFileError(f"{name}: write [\"06:00\", \"400 mcg/day\"]")
            out.append([parse_clock_min(s[0], name), parse_dose_rate_ng_day(s[1], name)])
        return {"kind": "flex", "segments": out}
    if mode == "step":
        return {
            "kind": "step",
            "ng_day": parse_dose_rate_ng_day(t.get("dose"), t.name("dose")),
            "pct": parse_percent(t.get("increase"), t.name("increase")),
            "every_days": parse_duration_s(t.get("every", "1 day"), t.name("every")) // 86_400,
            "steps": t.get("steps"),
        }
    raise PlanFileError(f"{t.name('mode')}: must be stopped, continuous, flex or step")


def parse_plan(doc: dict) -> tuple[dict, dict]:
    """TOML document -> (raw canonical plan, host-side metadata such as the fill volume)."""
    top = _Field(doc, "", TOP_KEYS)
    plan: dict = {"v": core.PLAN_VERSION}
    meta: dict = {}
    title = top.get("title")
    if title is not None:
        meta["title"] = str(title)
    drug = _Field(top.get("drug") or {}, "drug", DRUG_KEYS)
    plan["drug"] = drug.get("name")
    if plan["drug"] is None:
        raise PlanFileError("drug.name: is required (e.g. name = \"baclofen\" in [drug])")
    custom = drug.get("custom", False)
    if not isinstance(custom, bool):
        raise PlanFileError("drug.custom: write custom = true (a drug without built-in rules)")
    if custom:
        plan["custom_drug"] = True
    _check_drug_name(plan["drug"])
    plan["conc_ng_ml"] = parse_conc(drug.get("concentration"), "drug.concentration")
    drug.done()
    if top.get("basal") is None:
        raise PlanFileError("basal: is required (mode = stopped | continuous | flex | step)")
    basal = _Field(top.get("basal"), "basal", BASAL_KEYS)
    plan["basal"] = _basal(basal)
    if basal.get("minimum_rate") is not None:
        plan["min_nl_day"] = parse_volume_rate_nl_day(basal.get("minimum_rate"), "basal.minimum_rate")
    basal.done()
    if top.get("catheter_volume") is not None:
        plan["catheter_nl"] = parse_volume_nl(top.get("catheter_volume"), "catheter_volume")

    if top.get("start") is not None:
        st = _Field(top.get("start"), "start", START_KEYS)
        if st.get("bolus") is not None:
            ng, dur = parse_dose_over(st.get("bolus"), "start.bolus")
            plan["start"] = {"kind": "bolus", "ng": ng, "dur_s": dur}
        elif st.get("prime") is not None:
            pr = _Field(st.get("prime"), "start.prime", PRIME_KEYS)
            plan["start"] = {
                "kind": "prime",
                "pump_nl": parse_volume_nl(pr.get("pump", "0 mL"), "start.prime.pump"),
                "catheter_nl": parse_volume_nl(pr.get("catheter", "0 mL"), "start.prime.catheter"),
                "nl_min": parse_volume_rate_nl_day(pr.get("rate"), "start.prime.rate") // 1440,
            }
            pr.done()
        else:
            raise PlanFileError("start: give bolus = \"dose over time\" or a prime table")
        st.done()

    if top.get("periodic") is not None:
        pe = _Field(top.get("periodic"), "periodic", PERIODIC_KEYS)
        times = pe.get("times")
        if not isinstance(times, list):
            raise PlanFileError("periodic.times: list clock times like [\"06:00\", \"14:00\"]")
        ng, dur = parse_dose_over(pe.get("bolus"), "periodic.bolus")
        plan["periodic"] = {"times_min": [parse_clock_min(x, f"periodic.times[{i}]")
                                          for i, x in enumerate(times)], "ng": ng, "dur_s": dur}
        pe.done()

    if top.get("patient") is not None:
        pa = _Field(top.get("patient"), "patient", PATIENT_KEYS)
        ng, dur = parse_dose_over(pa.get("bolus"), "patient.bolus")
        plan["patient"] = {"ng": ng, "dur_s": dur,
                           "lockout_s": parse_duration_s(pa.get("lockout"), "patient.lockout"),
                           "max_24h": pa.get("max_per_day")}
        pa.done()

    if top.get("reservoir") is not None:
        rs = _Field(top.get("reservoir"), "reservoir", RESERVOIR_KEYS)
        res: dict = {}
        if rs.get("low") is not None:
            res["low_nl"] = parse_volume_nl(rs.get("low"), "reservoir.low")
        if rs.get("empty") is not None:
            res["empty_nl"] = parse_volume_nl(rs.get("empty"), "reservoir.empty")
        if rs.get("refill_by") is not None:
            res["refill_by_days"] = parse_duration_s(rs.get("refill_by"), "reservoir.refill_by") // 86_400
        if rs.get("on_empty") is not None:
            res["on_empty"] = rs.get("on_empty")
        if rs.get("fill") is not None:
            meta["fill_nl"] = parse_fill_nl(rs.get("fill"), "reservoir.fill")
        rs.done()
        plan["reservoir"] = res

    if top.get("caps") is not None:
        cp = _Field(top.get("caps"), "caps", CAPS_KEYS)
        caps = {}
        if cp.get("per_day") is not None:
            caps["ng_24h"] = parse_mass_ng(cp.get("per_day"), "caps.per_day")
        if cp.get("per_hour") is not None:
            caps["ng_1h"] = parse_mass_ng(cp.get("per_hour"), "caps.per_hour")
        cp.done()
        plan["caps"] = caps

    if top.get("scenario") is not None:
        meta["scenario"] = _scenario(top.get("scenario"))
    top.done()
    return plan, meta


def _scenario(sc) -> dict:
    """[scenario] for `pumprig simulate`: refills and patient bolus requests at given times."""
    t = _Field(sc, "scenario", SCENARIO_KEYS)
    out = {"events": []}
    evs = t.get("events") or []
    if not isinstance(evs, list):
        raise PlanFileError("scenario.events: must be a list of tables")
    for i, e in enumerate(evs):
        f = _Field(e, f"scenario.events[{i}]", EVENT_KEYS)
        ev = {"at_s": parse_duration_s(f.get("at"), f.name("at"))}
        if f.get("refill") is not None:
            ev["refill_nl"] = parse_fill_nl(f.get("refill"), f.name("refill"))
            if f.get("concentration") is not None:
                ev["conc_ng_ml"] = parse_conc(f.get("concentration"), f.name("concentration"))
        elif f.get("bolus") is not None:
            ev["bolus"] = True
        else:
            raise PlanFileError(f"{f.path}: give refill = \"20 mL\" or bolus = true")
        f.done()
        out["events"].append(ev)
    t.done()
    return out


def _check_drug_name(name) -> None:
    """A second opinion on the drug's name (difflib), on top of pumpcore.worst.near_drug which
    host and firmware share: the host may refuse more names, never fewer. A near miss is
    refused here, first, so that 'baclofen ' is answered with the drug it resembles rather
    than with what a custom drug would lack (issue 14)."""
    from pumpcore.worst import near_drug

    if not isinstance(name, str) or name in core.DRUGS:
        return  # listed, or the shared rule refuses the type
    near = near_drug(name, core.DRUGS)
    if near is not None:
        raise PlanFileError(f"drug.name: unknown drug {name!r}: did you mean {near}?")
    close = difflib.get_close_matches(name.strip().lower(), list(core.DRUGS), n=1, cutoff=0.8)
    if close:
        raise PlanFileError(f"drug.name: unknown drug {name!r}: did you mean {close[0]}?")


# canonical field -> (the plan file's field, how its numbers are written there), for messages
_FILE_FIELD = {"caps.ng_24h": "caps.per_day", "caps.ng_1h": "caps.per_hour",
               "drug": "drug.name", "custom_drug": "drug.custom",
               "conc_ng_ml": "drug.concentration", "periodic": "periodic.bolus",
               "patient": "patient.bolus", "catheter_nl": "catheter_volume",
               "min_nl_day": "basal.minimum_rate"}
_CANON = {
    "basal.ng_day": ("basal.dose", units.format_dose_rate),
    "basal.pct": ("basal.increase", lambda v: f"{v} %"),
    "basal.every_days": ("basal.every", lambda v: units.format_duration_s(v * 86_400)),
    "basal.steps": ("basal.steps", str),
    "basal.segments": ("basal.segments", units.format_dose_rate),
    "basal.kind": ("basal.mode", str),
    "conc_ng_ml": ("drug.concentration", units.format_concentration),
    "min_nl_day": ("basal.minimum_rate", units.format_volume_rate),
    "catheter_nl": ("catheter_volume", units.format_volume_nl),
    "start.ng": ("start.bolus", units.format_mass_ng),
    "start.dur_s": ("start.bolus", units.format_duration_s),
    "start.kind": ("start", str),
    "start.pump_nl": ("start.prime.pump", units.format_volume_nl),
    "start.catheter_nl": ("start.prime.catheter", units.format_volume_nl),
    "start.nl_min": ("start.prime.rate", lambda v: units.format_volume_nl(v) + "/min"),
    "periodic.ng": ("periodic.bolus", units.format_mass_ng),
    "periodic.dur_s": ("periodic.bolus", units.format_duration_s),
    "periodic.times_min": ("periodic.times", str),
    "patient.ng": ("patient.bolus", units.format_mass_ng),
    "patient.dur_s": ("patient.bolus", units.format_duration_s),
    "patient.lockout_s": ("patient.lockout", units.format_duration_s),
    "patient.max_24h": ("patient.max_per_day", str),
    "reservoir.low_nl": ("reservoir.low", units.format_volume_nl),
    "reservoir.empty_nl": ("reservoir.empty", units.format_volume_nl),
    "reservoir.refill_by_days": ("reservoir.refill_by",
                                 lambda v: units.format_duration_s(v * 86_400)),
    "reservoir.on_empty": ("reservoir.on_empty", str),
    "caps.ng_24h": ("caps.per_day", units.format_mass_ng),
    "caps.ng_1h": ("caps.per_hour", units.format_mass_ng),
}
_NAMES = {"low_nl": "reservoir.low", "custom_drug = true": "custom = true in [drug]"}


def _human_reason(reason: str, fmt) -> str:
    """A canonical reason with its integers in the plan file's units."""
    reason = re.sub(r"(must be at (?:least|most)) (-?\d+), got (-?\d+)",
                    lambda m: f"{m.group(1)} {fmt(int(m.group(2)))}, not {fmt(int(m.group(3)))}",
                    reason)
    reason = re.sub(r"needs (\d+) nL/day, above the mechanism limit of (\d+) nL/day",
                    lambda m: (f"needs {units.format_volume_rate(int(m.group(1)))}, above the "
                               f"pump's limit of {units.format_volume_rate(int(m.group(2)))}"),
                    reason)
    reason = re.sub(r"(\d+) ng is above the (.+) ceiling of (\d+) ng/day",
                    lambda m: (f"{units.format_mass_ng(int(m.group(1)))} is above the "
                               f"{m.group(2)} ceiling of "
                               f"{units.format_dose_rate(int(m.group(3)))}"), reason)
    if reason == "dose rate out of range":
        reason = f"dose rate out of range (0 to {units.format_dose_rate(10**10)})"
    for a, b in _NAMES.items():
        reason = reason.replace(a, b)
    return reason


def _fmt_dur(s: int) -> str:
    if s % 3600 == 0:
        return f"{s // 3600} h"
    if s % 60 == 0:
        return f"{s // 60} min"
    return f"{s} s"


def _file_field(field: str, plan: dict) -> str:
    base = re.sub(r"\[\d+\]$", "", field)
    if base in _CANON:
        return _CANON[base][0] + field[len(base):]
    if field == "start":
        st = plan.get("start") if isinstance(plan, dict) else None
        return "start.prime" if isinstance(st, dict) and st.get("kind") == "prime" else "start.bolus"
    if field == "basal":
        b = plan.get("basal") if isinstance(plan, dict) else None
        kind = b.get("kind") if isinstance(b, dict) else None
        return {"flex": "basal.segments", "stopped": "basal.minimum_rate"}.get(kind, "basal.dose")
    return _FILE_FIELD.get(field, field)


def _source_text(source: str, plan: dict) -> str:
    """What the plan file says of the source that fills a window, in its units."""
    from pumpcore.worst import mass_text

    if source == "start":
        st = plan["start"]
        if st["kind"] == "bolus":
            return f"{mass_text(st['ng'])} over {_fmt_dur(st['dur_s'])}"
        return (f"a prime of {_fmt_vol(st['pump_nl'] + st['catheter_nl'])} at "
                f"{st['nl_min'] / 1000:g} uL/min")
    if source == "periodic":
        pe = plan["periodic"]
        n = len(pe["times_min"])
        return (f"{mass_text(pe['ng'])} over {_fmt_dur(pe['dur_s'])} at {n} time"
                f"{'s' if n > 1 else ''} a day")
    if source == "patient":
        pa = plan["patient"]
        return (f"{mass_text(pa['ng'])} over {_fmt_dur(pa['dur_s'])}, lockout "
                f"{_fmt_dur(pa['lockout_s'])}, at most {pa['max_24h']} a day")
    b = plan["basal"]
    if b["kind"] == "stopped":
        return f"{plan.get('min_nl_day', 0)} nL/day"
    return f"{mass_text(core.basal_max_ng_day(b))}/day" + (" at most" if b["kind"] != "continuous" else "")


def plan_error_text(e: core.PlanError, plan) -> str:
    """A PlanError in the plan file's words: its field, and for a cap its figures."""
    field = _file_field(e.field, plan)
    if getattr(e, "cap", None) is None:
        fmt = _CANON.get(re.sub(r"\[\d+\]$", "", e.field), (None, str))[1]
        return f"{field}: {_human_reason(e.reason, fmt)}"
    from pumpcore.worst import mass_text

    parts = ", ".join(f"{k} {mass_text(v)}" for k, v in e.parts.items() if v)
    return (f"{field}: {_source_text(e.field, plan)} gives {mass_text(e.worst_ng)} in the worst "
            f"{e.window} ({e.counted}; {parts}), above {_FILE_FIELD[e.cap]} "
            f"{mass_text(e.cap_ng)}")


def load_plan_file(path) -> tuple[dict, dict]:
    """Read and validate a plan file -> (canonical plan, metadata). Raises PlanFileError."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no such plan file") from None
    except OSError as e:
        raise PlanFileError(f"{path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise PlanFileError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanFileError(f"{path}: not valid TOML ({e})") from None
    try:
        raw, meta = parse_plan(doc)
    except PlanFileError as e:
        raise PlanFileError(f"{path}: {e}") from None  # every message names the file
    try:
        plan = core.validate(raw)
    except core.PlanError as e:
        raise PlanFileError(f"{path}: {plan_error_text(e, raw)}") from None
    return plan, meta


def load_plan(path) -> dict:
    return load_plan_file(path)[0]


def validate_for_rig(plan: dict, limits: dict) -> dict:
    try:
        return core.validate(plan, limits)
    except core.PlanError as e:
        raise PlanFileError(plan_error_text(e, plan)) from None


def board_limits(name: str) -> dict:
    """The plan limits of a board json of this repository (board/boards/NAME.json), as the
    firmware reports them at the default calibration."""
    import json

    from .firmware import board_dir

    path = board_dir() / "boards" / f"{name}.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        names = sorted(p.stem for p in path.parent.glob("*.json"))
        raise PlanFileError(f"--board: no board {name!r} (one of {', '.join(names)})") from None
    return {"max_nl_day": cfg["max_step_hz"] * 86_400 * cfg["step_pl"] // 1000,
            "reservoir_nl": cfg["reservoir_nl"], "pump_path_nl": cfg.get("pump_path_nl", 0),
            "step_pl": cfg["step_pl"]}


def worst_windows(plan: dict, pump_path_nl: int | None = None,
                  step_pl: int | None = None) -> dict:
    """The worst hour and 24 h of the plan (pumpcore.worst), in ng, with each source's share
    and the caps; counted_*: the same windows as the firmware's plan check and its dose limiter
    count them (62 min and 24 h 30 min, whole steps of step_pl, one ahead), which the caps
    must hold."""
    from pumpcore import worst as wm

    conc = plan["conc_ng_ml"]
    out = {}
    step = step_pl or wm.DEFAULT_STEP_PL
    for key, w, lw in (("1h", wm.HOUR_MS, wm.LIM_HOUR_MS), ("24h", wm.DAY_MS, wm.LIM_DAY_MS)):
        v = wm.worst(plan, w, pump_path_nl)
        out["ng_" + key] = wm.to_ng(v[0], conc)
        out["counted_" + key] = wm.limiter_ng(wm.worst(plan, lw, pump_path_nl)[0], conc, step)
        out["parts_" + key] = {k: wm.to_ng(x, conc) for k, x in zip(wm.SOURCES, v[1:], strict=True)}
        out["cap_ng_" + key] = plan["caps"]["ng_" + key]
    out["pump_path_nl"] = pump_path_nl
    return out


# --- summaries -----------------------------------------------------------------------------

def _fmt_mass(ng: int) -> str:
    if ng >= 1_000_000:
        return f"{ng / 1_000_000:g} mg"
    if ng >= 1_000:
        return f"{ng / 1_000:g} mcg"
    return f"{ng} ng"


def _fmt_vol(nl: int) -> str:
    return f"{nl / 1_000_000:.3f} mL"


def _fmt_clock(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


def ideal_volume_nl(plan: dict, seconds: int, start_epoch_s: int = 0) -> int:
    """Ideal volume over the first `seconds` of the plan (no patient boluses)."""
    clock = Clock()
    clock.set(0, start_epoch_s, 0)
    sched = Schedule(plan, clock, 0)
    end = seconds * 1000
    t, acc = 0, 0
    while t < end:
        nxt = sched.next_change_ms(t)
        e = end if nxt is None or nxt > end else nxt
        acc += sched.rate_nl_day(t) * (e - t)
        t = e
    return acc // DAY_MS


def summarize(plan: dict, fill_nl: int | None = None, start_epoch_s: int | None = None,
              pump_path_nl: int | None = None, step_pl: int | None = None) -> dict:
    start = int(start_epoch_s if start_epoch_s is not None else _dt.datetime.now(_dt.timezone.utc).timestamp())
    day_nl = ideal_volume_nl(plan, 86_400, start)
    conc = plan["conc_ng_ml"]
    out = {
        "drug": plan["drug"], "conc_ng_ml": conc, "mode": plan["basal"]["kind"],
        "volume_nl_day": day_nl, "dose_ng_day": core.nl_to_ng(day_nl, conc),
        "plan_crc": core.crc(plan), "violations": [],
        "worst": worst_windows(plan, pump_path_nl, step_pl),
    }
    if plan["patient"]:
        p = plan["patient"]
        n = min(p["max_24h"], 86_400 // p["lockout_s"] or 1)
        out["patient_max_nl_day"] = core.ng_to_nl(p["ng"] * n, conc)
    if fill_nl is not None:
        res = plan["reservoir"]
        out["fill_nl"] = fill_nl
        # walk day by day (step dosing and start boluses change the daily volume)
        for key, target in (("days_to_low", res["low_nl"]), ("days_to_empty", res["empty_nl"])):
            out[key] = _days_until(plan, fill_nl - target, start)
        if out["days_to_low"] is not None:
            out["projected_refill_epoch_s"] = start + int(out["days_to_low"] * 86_400)
        if res["refill_by_days"]:
            out["refill_by_epoch_s"] = start + res["refill_by_days"] * 86_400
            if out["days_to_low"] is not None and out["days_to_low"] > res["refill_by_days"]:
                out["violations"].append(
                    f"refill-by date (day {res['refill_by_days']}) comes before LOW "
                    f"(day {out['days_to_low']:.1f}): the refill-by alarm will sound first")
        if fill_nl <= res["low_nl"]:
            out["violations"].append("the fill is at or below the LOW level")
    if plan["basal"]["kind"] == "flex":
        out["flex_total_ng_day"] = core.flex_total_ng(plan["basal"])
    return out


def _days_until(plan, volume_nl, start_epoch_s, max_days=730):
    if volume_nl <= 0:
        return 0.0
    clock = Clock()
    clock.set(0, start_epoch_s, 0)
    sched = Schedule(plan, clock, 0)
    need = volume_nl * DAY_MS
    t, end = 0, max_days * DAY_MS
    while t < end:
        nxt = sched.next_change_ms(t)
        e = end if nxt is None or nxt > end else nxt
        r = sched.rate_nl_day(t)
        if r and r * (e - t) >= need:
            return (t + need / r) / DAY_MS
        need -= r * (e - t)
        t = e
    return None


def describe(plan: dict) -> list[str]:
    conc = plan["conc_ng_ml"]
    lines = [f"drug            {plan['drug']} at {_fmt_mass(conc)}/mL"]
    b = plan["basal"]
    if b["kind"] == "continuous":
        lines.append(f"basal           continuous {_fmt_mass(b['ng_day'])}/day "
                     f"({_fmt_vol(core.ng_to_nl(b['ng_day'], conc))}/day)")
    elif b["kind"] == "flex":
        lines.append(f"basal           flex, {len(b['segments'])} segments, "
                     f"{_fmt_mass(core.flex_total_ng(b))}/24 h")
        for start, ng in b["segments"]:
            lines.append(f"                  from {_fmt_clock(start)}  {_fmt_mass(ng)}/day")
    elif b["kind"] == "step":
        lines.append(f"basal           step dosing from {_fmt_mass(b['ng_day'])}/day, "
                     f"+{b['pct']} % every {b['every_days']} day(s), {b['steps']} steps")
    else:
        lines.append("basal           stopped"
                     + (f" (minimum {plan['min_nl_day']} nL/day)" if plan["min_nl_day"] else ""))
    st = plan["start"]
    if st and st["kind"] == "bolus":
        lines.append(f"start           bolus {_fmt_mass(st['ng'])} over {st['dur_s'] // 60} min")
    elif st:
        lines.append(f"start           prime pump {_fmt_vol(st['pump_nl'])} + catheter "
                     f"{_fmt_vol(st['catheter_nl'])} at {st['nl_min'] / 1000:g} uL/min")
    if plan["periodic"]:
        pe = plan["periodic"]
        lines.append(f"periodic        {_fmt_mass(pe['ng'])} over {pe['dur_s'] // 60} min at "
                     + ", ".join(_fmt_clock(t) for t in pe["times_min"]))
    if plan["patient"]:
        pa = plan["patient"]
        lines.append(f"patient bolus   {_fmt_mass(pa['ng'])} over {pa['dur_s'] // 60} min, "
                     f"lockout {pa['lockout_s'] / 3600:g} h, max {pa['max_24h']}/24 h")
    r = plan["reservoir"]
    lines.append(f"reservoir       LOW {_fmt_vol(r['low_nl'])}, EMPTY {_fmt_vol(r['empty_nl'])}"
                 f" (then {r['on_empty']})"
                 + (f", refill by day {r['refill_by_days']}" if r["refill_by_days"] else ""))
    lines.append(f"caps            {_fmt_mass(plan['caps']['ng_24h'])}/24 h, "
                 f"{_fmt_mass(plan['caps']['ng_1h'])}/h")
    return lines


def diff(old: dict | None, new: dict) -> list[str]:
    """Human lines of what changes from the running plan to the new one."""
    if old is None:
        return ["(no plan running) new plan:"] + ["  + " + s for s in describe(new)]
    a, b = describe(old), describe(new)
    if a == b and core.crc(old) == core.crc(new):
        return ["no change: the rig already runs this plan (CRC %s)" % core.crc(new)]
    out = []
    for line in a:
        if line not in b:
            out.append("  - " + line)
    for line in b:
        if line not in a:
            out.append("  + " + line)
    return out or ["  (same description, different details: CRC %s -> %s)"
                   % (core.crc(old), core.crc(new))]
