"""Dose plan: the canonical form, its rules, and its CRC. Imported by the firmware and the host.

A plan is a dict of integers and short strings (see docs/plans.md). `validate(plan, limits)`
checks it as a whole and returns a normalised copy, or raises PlanError naming the field and the
reason; nothing is applied until a plan has passed. The host's TOML loader produces this form.
"""

from pumpcore import const

from .dose import crc, ng_to_nl, nl_to_ng, step_dose_ng_day  # noqa: F401  (one import for the host)

PLAN_VERSION = const(1)
DAY_MS = const(86_400_000)
MAX_FLEX = const(24)  # current devices allow 13 changes a day; we allow up to 24 segments
MAX_PERIODIC = const(12)
MAX_DRUG_LEN = const(24)

BASAL_KINDS = ("stopped", "continuous", "flex", "step")
START_KINDS = ("bolus", "prime")
ON_EMPTY = ("stop", "min")

# Per-drug rules. ng/day ceilings and whether patient boluses are allowed.
# Baclofen: maintenance rarely above 1000 mcg/day, and patient boluses are not allowed.
# A drug not listed is taken only with "custom_drug": true and both caps stated, and only if
# its name is not a near miss of a listed one (pumpcore.worst.near_drug).
DRUGS = {
    "baclofen": {"patient": False, "max_ng_day": 1_000_000},
    "morphine": {"patient": True, "max_ng_day": 20_000_000},
    "hydromorphone": {"patient": True, "max_ng_day": 10_000_000},
    "ziconotide": {"patient": False, "max_ng_day": 19_200},
    "clonidine": {"patient": True, "max_ng_day": 1_000_000},
    "bupivacaine": {"patient": True, "max_ng_day": 15_000_000},
    "saline": {"patient": True, "max_ng_day": 0},
}

TOP_KEYS = (
    "v", "drug", "custom_drug", "conc_ng_ml", "basal", "min_nl_day", "start", "periodic",
    "patient", "caps", "reservoir", "catheter_nl",
)


class PlanError(ValueError):
    """An invalid plan: `field` names where, `reason` says why."""

    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


def _int(d, key, field, lo, hi, default=None):
    if key not in d:
        if default is None:
            raise PlanError(field + "." + key if field else key, "is required")
        return default
    v = d[key]
    name = field + "." + key if field else key
    if isinstance(v, bool) or not isinstance(v, int):
        raise PlanError(name, "must be a whole number, got %r" % (v,))
    if v < lo:
        raise PlanError(name, "must be at least %d, got %d" % (lo, v))
    if v > hi:
        raise PlanError(name, "must be at most %d, got %d" % (hi, v))
    return v


def _obj(d, key, field):
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise PlanError(field + key, "must be a table")
    return v


def _keys(d, allowed, field):
    for k in d:
        if k not in allowed:
            raise PlanError(field + k if field else k, "unknown key")


def basal_max_ng_day(basal):
    kind = basal["kind"]
    if kind == "stopped":
        return 0
    if kind == "continuous":
        return basal["ng_day"]
    if kind == "flex":
        m = 0
        for seg in basal["segments"]:
            if seg[1] > m:
                m = seg[1]
        return m
    return step_dose_ng_day(basal, basal["steps"])


def flex_total_ng(basal):
    """Dose over 24 h of a flex schedule (segment rates weighted by their minutes)."""
    segs = basal["segments"]
    total = 0
    for i in range(len(segs)):
        end = segs[i + 1][0] if i + 1 < len(segs) else 1440
        total += segs[i][1] * (end - segs[i][0])
    return total // 1440


def _validate_basal(b, field):
    if not isinstance(b, dict):
        raise PlanError(field, "must be a table")
    kind = b.get("kind")
    if kind not in BASAL_KINDS:
        raise PlanError(field + ".kind", "must be one of %s" % ", ".join(BASAL_KINDS))
    out = {"kind": kind}
    if kind == "stopped":
        _keys(b, ("kind",), field + ".")
    elif kind == "continuous":
        _keys(b, ("kind", "ng_day"), field + ".")
        out["ng_day"] = _int(b, "ng_day", field, 0, 10**10)
    elif kind == "flex":
        _keys(b, ("kind", "segments"), field + ".")
        segs = b.get("segments")
        if not isinstance(segs, list) or not segs:
            raise PlanError(field + ".segments", "must be a non-empty list of [start_min, ng_day]")
        if len(segs) > MAX_FLEX:
            raise PlanError(field + ".segments", "has %d segments, at most %d" % (len(segs), MAX_FLEX))
        prev = -1
        norm = []
        for i, s in enumerate(segs):
            name = "%s.segments[%d]" % (field, i)
            if not isinstance(s, (list, tuple)) or len(s) != 2:
                raise PlanError(name, "must be [start_min, ng_day]")
            start, rate = s[0], s[1]
            for v in (start, rate):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise PlanError(name, "must hold whole numbers")
            if i == 0 and start != 0:
                raise PlanError(name, "the first segment must start at 00:00")
            if start <= prev or start >= 1440:
                raise PlanError(name, "start times must increase within the day (00:00-23:59)")
            if rate < 0 or rate > 10**10:
                raise PlanError(name, "dose rate out of range")
            prev = start
            norm.append([start, rate])
        out["segments"] = norm
    else:
        _keys(b, ("kind", "ng_day", "pct", "every_days", "steps"), field + ".")
        out["ng_day"] = _int(b, "ng_day", field, 1, 10**10)
        out["pct"] = _int(b, "pct", field, 1, 100)
        out["every_days"] = _int(b, "every_days", field, 1, 365)
        out["steps"] = _int(b, "steps", field, 1, 60)
    return out


def _rate_ok(max_nl_day, name, nl_day):
    if max_nl_day and nl_day > max_nl_day:
        raise PlanError(name, "needs %d nL/day, above the mechanism limit of %d nL/day"
                        % (nl_day, max_nl_day))


# validate() is split into one function per section: each function's bytecode is one block of
# the heap, and a board heap may not have one large free block when a plan arrives.
def validate(plan, limits=None):
    """Check a whole plan; return its normalised copy or raise PlanError.

    limits: {"max_nl_day": mechanism rate limit, "reservoir_nl": capacity, "pump_path_nl":
    the pump path's dead volume, "step_pl": the step volume} from the board. Without
    pump_path_nl (an offline check) a prime's `pump_nl` is taken as the empty pump path it
    declares; without step_pl the worst windows are counted in the sim board's steps.

    Two stages: shape() (this module) and pumpcore.worst.check (the worst windows against the
    caps). The firmware runs them one after the other with only one of the two modules in
    the heap (App.check_plan); the host runs both here.
    """
    out, ctx = shape(plan, limits)
    from . import worst

    err = worst.check(out, ctx)
    if err is not None:
        raise error(err)
    return out


def error(err):
    """PlanError from a pumpcore.worst.check answer, with its figures (ng) as attributes:
    cap (the cap's field), window, worst_ng (as the dose limiter counts it), cap_ng, parts
    {source: ng, exact}, counted (how the window is counted, in words)."""
    e = PlanError(err["field"], err["reason"])
    e.cap = err.get("cap")
    e.window = err.get("window")
    e.worst_ng = err.get("worst_ng")
    e.cap_ng = err.get("cap_ng")
    e.parts = err.get("parts")
    e.counted = err.get("counted")
    return e


def shape(plan, limits=None):
    """The first stage of validate: everything but the worst windows. -> (normalised plan
    without caps.ng_1h when the plan gives none, plain data for pumpcore.worst.check)."""
    if not isinstance(plan, dict):
        raise PlanError("plan", "must be a table")
    _keys(plan, TOP_KEYS, "")
    lim = limits or {}
    out = {"v": _int(plan, "v", "", PLAN_VERSION, PLAN_VERSION, PLAN_VERSION)}
    drug, custom = _validate_drug(plan)
    out["drug"] = drug
    if custom:
        out["custom_drug"] = True  # only when set: the CRC of every other plan is unchanged
    conc = _int(plan, "conc_ng_ml", "", 1, 100_000_000)
    out["conc_ng_ml"] = conc
    rules = DRUGS.get(drug)

    if "basal" not in plan:
        raise PlanError("basal", "is required")
    basal = _validate_basal(plan["basal"], "basal")
    out["basal"] = basal
    out["min_nl_day"] = _int(plan, "min_nl_day", "", 0, 100_000, 0)
    out["catheter_nl"] = _int(plan, "catheter_nl", "", 0, 2_000_000, 0)
    max_nl_day = lim.get("max_nl_day", 0)
    out["start"] = _validate_start(_obj(plan, "start", ""), conc, max_nl_day)
    out["periodic"] = _validate_periodic(_obj(plan, "periodic", ""), conc, max_nl_day)
    out["patient"] = _validate_patient(_obj(plan, "patient", ""), conc, max_nl_day, rules, drug)
    out["reservoir"] = _validate_reservoir(_obj(plan, "reservoir", "") or {},
                                           lim.get("reservoir_nl", 100_000_000))
    basal_day = basal_max_ng_day(basal)
    _rate_ok(max_nl_day, "basal", ng_to_nl(basal_day, conc))
    if out["min_nl_day"] and ng_to_nl(basal_day, conc) and out["min_nl_day"] > ng_to_nl(basal_day, conc):
        raise PlanError("min_nl_day", "the minimum rate must not exceed the basal rate")
    out["caps"] = _validate_caps(_obj(plan, "caps", "") or {}, rules, drug)
    ctx = {"pump_path_nl": lim.get("pump_path_nl"), "step_pl": lim.get("step_pl")}
    if rules is None:
        ctx["drugs"] = tuple(DRUGS)  # for the near-miss check of the second stage
    return out, ctx


def _validate_drug(plan):
    """(name, custom). A listed drug is taken as it is; any other name is judged by
    pumpcore.worst.check (near misses of a listed drug, the custom declaration, its caps)."""
    drug = plan.get("drug")
    if not isinstance(drug, str) or not drug or len(drug) > MAX_DRUG_LEN:
        raise PlanError("drug", "must be a name of 1-%d characters" % MAX_DRUG_LEN)
    custom = plan.get("custom_drug", False)
    if custom is not True and custom is not False:
        raise PlanError("custom_drug", "must be true or false")
    if custom and drug in DRUGS:
        raise PlanError("custom_drug", "%s is a listed drug: its own rules apply" % drug)
    return drug, custom


def _validate_start(start, conc, max_nl_day):
    if start is None:
        return None
    kind = start.get("kind")
    if kind not in START_KINDS:
        raise PlanError("start.kind", "must be bolus or prime")
    if kind == "bolus":
        _keys(start, ("kind", "ng", "dur_s"), "start.")
        ng = _int(start, "ng", "start", 1, 10**9)
        dur = _int(start, "dur_s", "start", 1, 86_400)
        nl = ng_to_nl(ng, conc)
        _rate_ok(max_nl_day, "start", nl * 86_400 // dur)
        return {"kind": "bolus", "ng": ng, "dur_s": dur}
    _keys(start, ("kind", "pump_nl", "catheter_nl", "nl_min"), "start.")
    pump = _int(start, "pump_nl", "start", 0, 5_000_000)
    cath = _int(start, "catheter_nl", "start", 0, 2_000_000)
    if pump + cath == 0:
        raise PlanError("start", "a prime needs pump_nl or catheter_nl")
    nl_min = _int(start, "nl_min", "start", 1, 10_000_000)
    _rate_ok(max_nl_day, "start.nl_min", nl_min * 1440)
    return {"kind": "prime", "pump_nl": pump, "catheter_nl": cath, "nl_min": nl_min}


def _validate_periodic(per, conc, max_nl_day):
    if per is None:
        return None
    _keys(per, ("times_min", "ng", "dur_s"), "periodic.")
    times = per.get("times_min")
    if not isinstance(times, list) or not times or len(times) > MAX_PERIODIC:
        raise PlanError("periodic.times_min", "must list 1-%d clock times" % MAX_PERIODIC)
    prev = -1
    for i, t in enumerate(times):
        if isinstance(t, bool) or not isinstance(t, int) or t <= prev or t >= 1440:
            raise PlanError("periodic.times_min[%d]" % i,
                            "clock times must increase within the day")
        prev = t
    ng = _int(per, "ng", "periodic", 1, 10**9)
    dur = _int(per, "dur_s", "periodic", 1, 86_400)
    for i in range(len(times)):
        gap = (times[(i + 1) % len(times)] - times[i]) % 1440 or 1440
        if dur > gap * 60:
            raise PlanError("periodic.dur_s", "a bolus would run into the next one")
    _rate_ok(max_nl_day, "periodic", ng_to_nl(ng, conc) * 86_400 // dur)
    return {"times_min": list(times), "ng": ng, "dur_s": dur}


def _validate_patient(pat, conc, max_nl_day, rules, drug):
    if pat is None:
        return None
    _keys(pat, ("ng", "dur_s", "lockout_s", "max_24h"), "patient.")
    if rules is not None and not rules["patient"]:
        raise PlanError("patient", "%s may not be given as patient boluses" % drug)
    ng = _int(pat, "ng", "patient", 1, 10**9)
    dur = _int(pat, "dur_s", "patient", 1, 86_400)
    lock = _int(pat, "lockout_s", "patient", 60, 86_400)
    mx = _int(pat, "max_24h", "patient", 1, 48)
    if lock < dur:
        raise PlanError("patient.lockout_s", "must be at least the bolus duration")
    _rate_ok(max_nl_day, "patient", ng_to_nl(ng, conc) * 86_400 // dur)
    return {"ng": ng, "dur_s": dur, "lockout_s": lock, "max_24h": mx}


def _validate_reservoir(res, cap_nl):
    _keys(res, ("low_nl", "empty_nl", "refill_by_days", "on_empty"), "reservoir.")
    low = _int(res, "low_nl", "reservoir", 0, cap_nl, 2_000_000)
    empty = _int(res, "empty_nl", "reservoir", 0, cap_nl, 1_000_000)
    if empty > low:
        raise PlanError("reservoir.empty_nl", "must not be above low_nl")
    on_empty = res.get("on_empty", "stop")
    if on_empty not in ON_EMPTY:
        raise PlanError("reservoir.on_empty", "must be stop or min")
    return {
        "low_nl": low, "empty_nl": empty, "on_empty": on_empty,
        "refill_by_days": _int(res, "refill_by_days", "reservoir", 0, 400, 0),
    }


def _validate_caps(caps, rules, drug):
    """Safety caps: the most the plan may bring to the catheter tip in any 24 h and any hour.
    A listed drug's daily cap defaults to its ceiling and stays within it; a custom drug
    states both caps. That the plan fits them is pumpcore.worst.check's part, which also
    sets the hourly cap a plan leaves out to the plan's own worst hour."""
    _keys(caps, ("ng_24h", "ng_1h"), "caps.")
    out = {}
    if rules is not None or "ng_24h" in caps:  # a custom drug's missing cap: second stage
        cap24 = _int(caps, "ng_24h", "caps", 0, 10**11, rules["max_ng_day"] if rules else None)
        if rules and rules["max_ng_day"] and cap24 > rules["max_ng_day"]:
            raise PlanError("caps.ng_24h", "%d ng is above the %s ceiling of %d ng/day"
                            % (cap24, drug, rules["max_ng_day"]))
        out["ng_24h"] = cap24
    if "ng_1h" in caps:
        out["ng_1h"] = _int(caps, "ng_1h", "caps", 0, 10**11)
    return out


def mode_name(plan):
    if plan is None:
        return "none"
    return plan["basal"]["kind"]
