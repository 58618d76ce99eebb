"""The plan CRC from docs/protocol.md alone ("Normalisation", "The plan CRC"), standard library
only: what a third-party client writes. No pumprig or pumpcore import, on purpose: the tests
that use it show that the documented rule gives the firmware's plan_crc. Installed with the HIL
plugin: `from pumprig_hil import plan_crc`, or copy this one file into a client.
"""

import json
import zlib

# docs/protocol.md, the drug table: the default (and ceiling) of caps.ng_24h
DRUG_MAX_NG_DAY = {"baclofen": 1_000_000, "morphine": 20_000_000, "hydromorphone": 10_000_000,
                   "ziconotide": 19_200, "clonidine": 1_000_000, "bupivacaine": 15_000_000,
                   "saline": 0}
RESERVOIR_DEFAULTS = {"low_nl": 2_000_000, "empty_nl": 1_000_000, "on_empty": "stop",
                      "refill_by_days": 0}


def normalise(plan):
    p = dict(plan)
    p.setdefault("v", 1)
    if p.get("custom_drug") is not True:
        p.pop("custom_drug", None)
    for k in ("min_nl_day", "catheter_nl"):
        p.setdefault(k, 0)
    for k in ("start", "periodic", "patient"):
        p.setdefault(k, None)
    p["reservoir"] = {**RESERVOIR_DEFAULTS, **(p.get("reservoir") or {})}
    caps = dict(p.get("caps") or {})
    if "ng_24h" not in caps:
        caps["ng_24h"] = DRUG_MAX_NG_DAY[p["drug"]]
    caps.setdefault("ng_1h", caps["ng_24h"])
    p["caps"] = caps
    return p


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def plan_crc(plan):
    """CRC of a plan as a client writes it (defaults may be left out)."""
    return "%08x" % (zlib.crc32(canonical_json(normalise(plan)).encode("ascii")) & 0xFFFFFFFF)
