"""What happens during a simulated run besides the plan: faults (`--fault`) and patient bolus
requests (`--boluses FILE`), read from their text into plain data."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from .. import units
from ..errors import PumprigError

_MAX_FAULT_S = 3650 * 86_400  # the longest simulation
FAULT_KINDS = ("stall", "occlusion", "battery", "power")


def parse_fault(spec: str) -> dict:
    """'stall@30d', 'stall@30d:2h', 'occlusion@12h:30min', 'battery=3.2V@60d', 'power@45d'.
    Times are >= 0 and within 3650 days, durations > 0, a battery voltage 0.1-10 V (or mV);
    anything else is a PumprigError naming the spec."""
    kind = spec.split("@", 1)[0].split("=", 1)[0].strip().lower()
    if "@" in spec and kind not in FAULT_KINDS:
        raise PumprigError(f"--fault {spec!r}: unknown fault {kind!r}"
                           f"{units.did_you_mean(kind, FAULT_KINDS)}; one of "
                           + ", ".join(FAULT_KINDS))
    try:
        what, when = spec.split("@", 1)
        dur = None
        if ":" in when:
            when, dur = when.split(":", 1)
        value = None
        if "=" in what:
            what, value = what.split("=", 1)
        kind = what.strip().lower()
        if kind not in FAULT_KINDS:
            raise ValueError
        field = f"--fault {spec!r}"
        out = {"kind": kind, "at_s": _dur(when, field),
               "for_s": _dur(dur, field) if dur is not None else None}
        if out["for_s"] is not None and out["for_s"] <= 0:
            raise ValueError
        if kind == "battery":
            v = Decimal(value.strip().lower().rstrip("v"))
            mv = int(v * 1000) if v < 100 else int(v)
            if not 100 <= mv <= 10_000:
                raise ValueError
            out["mv"] = mv
        elif value is not None:
            raise ValueError
        return out
    except PumprigError:
        raise  # names the spec and the time in it
    except (ValueError, AttributeError, TypeError, ArithmeticError):
        raise PumprigError(f"--fault {spec!r}: write KIND@TIME[:DURATION], e.g. stall@30d:2h, "
                           "occlusion@12h:30min, battery=3.2V@60d, power@45d (times from 0 "
                           "to 3650 days)") from None


def _dur(text: str, field: str) -> int:
    """A time like 36h, 2d, 90min, 1.5 h, 1h30m: whole seconds, 0 to 3650 days (no sign, no
    nan or inf: PumprigError, with the nearest unit for a misspelt one)."""
    try:
        v = units.duration_s(str(text), field)
    except units.UnitError as e:
        raise PumprigError(f"{e} (e.g. 36h, 2d, 90min; 0 to 3650 days)") from None
    if not 0 <= v <= _MAX_FAULT_S:
        raise PumprigError(f"{field}: the time {text!r} is not within 0 to 3650 days")
    return v


def load_bolus_file(path) -> list[int]:
    """One request time per line (36h, 2d 4h is not allowed: use 52h), '#' comments."""
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except OSError as e:
        raise PumprigError(f"{path}: cannot read the bolus file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise PumprigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    out = []
    for i, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(_dur(line, f"{path}:{i}"))
    return sorted(out)
