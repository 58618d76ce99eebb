"""The machine-readable protocol: host/pumprig/protocol.schema.json (JSON Schema 2020-12).

The schema file is the one definition of every command's arguments, result and error codes,
every event's payload and the canonical (wire) plan; docs/protocol.md's tables are rendered
from it (render(), `python -m pumprig.protocol --write-doc docs/protocol.md`) and tests check
that the doc, the firmware's command dictionary (pumpcore.proto) and the firmware's answers
on a rig agree with it.

    problems = check_response("status", frame)   # [] when the answer fits the schema
    check_event("bolus.done", data)              # pushed payloads carry epoch_s and ms

jsonschema is imported for the first check only (the CLI never loads it otherwise).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from pumprig.errors import ProtocolError

SCHEMA_FILE = "protocol.schema.json"


class SchemaViolation(ProtocolError):
    """A frame's JSON does not fit the protocol schema."""


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("pumprig").joinpath(SCHEMA_FILE).read_text())


def commands() -> dict:
    return schema()["x-commands"]


def events() -> dict:
    return schema()["x-events"]


def errors() -> dict:
    return schema()["x-errors"]


@lru_cache(maxsize=None)
def _validator(pointer: str):
    import jsonschema  # validation only: a dependency of the host package (pyproject)

    root = schema()
    return jsonschema.Draft202012Validator({**root, "$ref": pointer})


def problems(pointer: str, instance) -> list[str]:
    """What is wrong with instance against the schema at pointer ("#/$defs/plan"), or []."""
    out = []
    for e in sorted(_validator(pointer).iter_errors(instance), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in e.path)
        out.append("%s: %s" % (where or "(top)", e.message[:200]))
    return out


def _cmd(cmd: str) -> str:
    if cmd not in commands():
        raise KeyError("no command %r in the protocol schema" % cmd)
    return "#/x-commands/" + cmd


def check_args(cmd: str, args) -> list[str]:
    return problems(_cmd(cmd) + "/args", args)


def check_result(cmd: str, result) -> list[str]:
    return problems(_cmd(cmd) + "/result", result)


def check_error(cmd: str | None, body) -> list[str]:
    """An err answer's body: its shape, and a code the command may answer (its own errors
    and the common ones; for an unreadable line, cmd None, the common ones)."""
    out = problems("#/$defs/error", body)
    code = body.get("code") if isinstance(body, dict) else None
    allowed = set(schema()["x-common-errors"])
    if cmd is not None and cmd in commands():
        allowed.update(commands()[cmd]["errors"])
    if not out and code not in allowed:
        out.append("code: %s is not an error %s may answer (schema: %s)"
                   % (code, cmd or "an unreadable line", ", ".join(sorted(allowed))))
    return out


def check_response(cmd: str | None, frame) -> list[str]:
    """A decoded response frame (pumpcore.proto.Frame) to a request of cmd."""
    if frame.name == "ok":
        if cmd is None or cmd not in commands():
            return ["an ok answer to %s, which has no result in the schema" % cmd]
        return check_result(cmd, frame.body)
    return check_error(cmd, frame.body)


def check_event(name: str, data, pushed: bool = True) -> list[str]:
    """An event's payload: as pushed (with epoch_s and ms) or as logged (data alone)."""
    if name not in events():
        return ["no event %r in the protocol schema" % name]
    if pushed:
        if data == {"truncated": True}:
            return []  # a payload that could not be encoded (docs/protocol.md, Events)
        if not isinstance(data, dict):
            return ["(top): the payload is not an object"]
        out = problems("#/$defs/event_time", {k: data.get(k) for k in ("epoch_s", "ms")})
        own = events()[name]["data"]["properties"]  # clock.set's epoch_s is its own too
        data = {k: v for k, v in data.items() if k in own or k not in ("epoch_s", "ms")}
        return out + problems("#/x-events/%s/data" % name, data)
    return problems("#/x-events/%s/data" % name, data)


def check_log_entry(ev) -> list[str]:
    out = problems("#/$defs/log_entry", ev)
    if not out:
        out = check_event(ev["kind"], ev["data"], pushed=False)
    return out


def check_plan(plan, canonical: bool = True) -> list[str]:
    return problems("#/$defs/plan" if canonical else "#/$defs/plan_in", plan)


def require(found: list[str], what: str) -> None:
    if found:
        raise SchemaViolation("%s does not fit the protocol schema: %s" % (what, "; ".join(found)))


# ------------------------------------------------------------------ the canonical plan, by hand
# What docs/protocol.md ("The plan on the wire") writes down, written out here from the schema
# so that a client in another language has a model: defaults from the schema's "default"s.

def plan_defaults() -> dict:
    """{field path: default} of the plan fields a client may leave out (caps are derived)."""
    props = schema()["$defs"]["plan_in"]["properties"]
    out = {}
    for k, v in props.items():
        if "default" in v and k not in ("reservoir", "caps"):
            out[k] = v["default"]
    for k, v in props["reservoir"]["properties"].items():
        out["reservoir." + k] = v["default"]
    return out


# ------------------------------------------------------------------ doc tables
_MARK = re.compile(r"<!-- schema:([a-z-]+) -->\n(.*?)<!-- /schema:\1 -->", re.S)


def _num(n: int) -> str:
    if abs(n) >= 10**6 and str(abs(n)).rstrip("0") == "1":
        return ("-" if n < 0 else "") + "10^%d" % (len(str(abs(n))) - 1)
    return "{:,}".format(n).replace(",", "_") if abs(n) >= 100_000 else str(n)


def _resolve(s: dict) -> dict:
    while isinstance(s, dict) and "$ref" in s and len(s) == 1:
        node = schema()
        for part in s["$ref"][2:].split("/"):
            node = node[part]
        s = node
    return s


def _type(s: dict) -> str:
    """A short text of a value's schema: `integer 1..10^9`, `"a" | "b"`, `string | null`."""
    if "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[1]
        target = _resolve(s)
        short = {"epoch_s": "epoch s", "epoch_s_or_null": "epoch s \\| null", "crc": "8 hex",
                 "hex32": "32 hex", "hex64": "64 hex", "alarm_kind": "alarm kind",
                 "error_code": "error code"}
        if name in short:
            return short[name]
        if name in ("plan", "plan_in", "plan_or_null", "status", "log_entry"):
            return {"plan": "canonical plan", "plan_in": "plan", "plan_or_null":
                    "canonical plan \\| null", "status": "status object",
                    "log_entry": "log entry"}[name]
        return _type(target)
    if "const" in s:
        return json.dumps(s["const"])
    if "enum" in s:
        return " \\| ".join(json.dumps(x) for x in s["enum"])
    if "anyOf" in s:
        return " \\| ".join(_type(x) for x in s["anyOf"])
    if "allOf" in s:
        return _type(s["allOf"][0])
    t = s.get("type")
    types = t if isinstance(t, list) else [t]
    base = types[0]
    if base == "integer":
        lo, hi = s.get("minimum"), s.get("maximum")
        txt = "integer"
        if lo is not None and hi is not None:
            txt += " %s..%s" % (_num(lo), _num(hi))
        elif lo is not None:
            txt += " >= %s" % _num(lo)
    elif base == "array":
        item = s.get("items")
        if "prefixItems" in (item or {}):
            txt = "[%s]" % ", ".join(_type(x) for x in item["prefixItems"])
            txt = "list of " + txt
        else:
            txt = "list of " + _type(item or {}) if item else "list"
        n = (s.get("minItems"), s.get("maxItems"))
        if n[1] is not None:
            txt += " (%d-%d)" % (n[0] or 0, n[1])
    elif base == "object":
        txt = "object"
    else:
        txt = base or "any"
        if s.get("pattern") == "^[0-2][0-9]:[0-5][0-9]$":
            txt = '"HH:MM"'
    if "null" in types[1:]:
        txt += " \\| null"
    return txt


def _keys(s: dict) -> str:
    s = _resolve(s)
    if "$ref" in s or "properties" not in s:
        return _type(s)
    req = set(s.get("required", ()))
    names = ["%s%s" % (k, "" if k in req else "?") for k in sorted(s["properties"])]
    return "`{}`" if not names else "`{%s}`" % ", ".join(names)


def _commands_table() -> str:
    rows = ["| cmd | role | args | result | errors (besides the common ones) | what |",
            "|---|---|---|---|---|---|"]
    for name, c in commands().items():
        args = c["args"]
        req = set(args.get("required", ()))
        a = ", ".join("`%s`%s" % (k, "" if k in req else "?") for k in args["properties"]) or "–"
        res = c["result"].get("anyOf", [c["result"]])[0]  # the others: the FIRMWARE safe state
        r = "the clock, as `clock.get`" if "$ref" in res and "x-commands" in res["$ref"] \
            else "the status object" if res.get("$ref", "").endswith("/status") else _keys(res)
        e = ", ".join("`%s`" % x for x in c["errors"]) or "–"
        rows.append("| `%s` | %s | %s | %s | %s | %s |" % (name, c["role"], a, r, e, c["summary"]))
    rows.append("")
    rows.append("Common errors (any command may answer them): %s."
                % ", ".join("`%s`" % x for x in schema()["x-common-errors"]))
    return "\n".join(rows) + "\n"


def _args_table() -> str:
    seen: dict = {}
    for name, c in commands().items():
        for k, v in c["args"]["properties"].items():
            t = _type(v)
            seen.setdefault((k, t), []).append(name)
    rows = ["| argument | commands | value |", "|---|---|---|"]
    for (k, t), cmds in seen.items():
        rows.append("| `%s` | %s | %s |" % (k, ", ".join("`%s`" % c for c in cmds), t))
    return "\n".join(rows) + "\n"


def _fields(props: dict, required=(), prefix="") -> list[str]:
    rows = []
    for k in sorted(props):
        v = props[k]
        d = _resolve(v).get("description", "") if "$ref" in v else v.get("description", "")
        rows.append("| `%s%s`%s | %s | %s |" % (prefix, k, "" if k in required else "?",
                                               _type(v), d))
    return rows


def _result_table(cmd: str) -> str:
    s = _resolve(commands()[cmd]["result"].get("anyOf", [commands()[cmd]["result"]])[0])
    rows = ["| field | value | meaning |", "|---|---|---|"]
    rows += _fields(s["properties"], set(s.get("required", ())))
    return "\n".join(rows) + "\n"


def _def_table(name: str) -> str:
    s = schema()["$defs"][name]
    rows = ["| field | value | meaning |", "|---|---|---|"]
    rows += _fields(s["properties"], set(s["required"]))
    return "\n".join(rows) + "\n"


def _status_table() -> str:
    s = schema()["$defs"]["status"]
    rows = ["| field | value | meaning |", "|---|---|---|"]
    rows += _fields(s["properties"], set(s["required"]))
    return "\n".join(rows) + "\n"


def _errors_table() -> str:
    common = set(schema()["x-common-errors"])
    rows = ["| code | common | meaning |", "|---|---|---|"]
    for code, text in errors().items():
        rows.append("| `%s` | %s | %s |" % (code, "yes" if code in common else "", text))
    return "\n".join(rows) + "\n"


def _events_table() -> str:
    rows = ["| event | payload (besides `epoch_s`, `ms`) | when |", "|---|---|---|"]
    for name, e in events().items():
        d = e["data"]
        req = set(d.get("required", ()))
        p = ", ".join("`%s`%s: %s" % (k, "" if k in req else "?", _type(v))
                      for k, v in d["properties"].items()) or "–"
        rows.append("| `%s` | %s | %s |" % (name, p, e["summary"]))
    return "\n".join(rows) + "\n"


def _plan_table() -> str:
    d = schema()["$defs"]
    props = d["plan_in"]["properties"]
    rows = ["| field | value | default | meaning |", "|---|---|---|---|"]

    def default(v):
        if "x-default" in v:
            return v["x-default"]
        if "default" in v:
            return "`%s`" % json.dumps(v["default"])
        return "required"

    for k, v in props.items():
        if k in ("basal", "start", "reservoir", "caps", "periodic", "patient"):
            continue
        rows.append("| `%s` | %s | %s | %s |" % (k, _type(v), default(v), v.get("description", "")))
    for section, variants in (("basal", d["basal"]["oneOf"]), ("start", d["start"]["oneOf"])):
        for var in variants:
            kind = var["properties"]["kind"]["const"]
            fields = [k for k in var["properties"] if k != "kind"]
            rows.append("| `%s` (`kind` %s) | %s | %s | %s |" % (
                section, json.dumps(kind), ", ".join("`%s`" % f for f in fields) or "–",
                "required" if section == "basal" else "`null`", var.get("description", "")))
            for f in fields:
                v = var["properties"][f]
                rows.append("| `%s.%s` | %s | required | %s |" % (section, f, _type(v),
                                                                v.get("description", "")))
    for section in ("periodic", "patient"):
        s = d[section]
        rows.append("| `%s` | object \\| null | `null` | %s |" % (section, s.get("description", "")))
        for f, v in s["properties"].items():
            rows.append("| `%s.%s` | %s | required | %s |" % (section, f, _type(v),
                                                            v.get("description", "")))
    for section in ("reservoir", "caps"):
        rows.append("| `%s` | object | `{}` | every field takes its default |" % section)
        for f, v in props[section]["properties"].items():
            rows.append("| `%s.%s` | %s | %s | %s |" % (section, f, _type(v), default(v),
                                                       v.get("description", "")))
    return "\n".join(rows) + "\n"


def canonical_json(value) -> str:
    """The canonical text (sorted keys, no spaces, ASCII): what the plan CRC covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _plan_examples() -> str:
    out = []
    for ex in schema()["x-plan-examples"]:
        out.append("%s%s, as written (defaults left out):" % (ex["name"], " (`%s`)" % ex["file"] if "file" in ex else ""))
        out.append("")
        out.append("```")
        out.append(canonical_json(ex["input"]))
        out.append("```")
        out.append("")
        out.append("canonical, CRC `%s`:" % ex["plan_crc"])
        out.append("")
        out.append("```")
        out.append(canonical_json(ex["plan"]))
        out.append("```")
        out.append("")
    return "\n".join(out)


def _drugs_table() -> str:
    rows = ["| drug | patient boluses | `caps.ng_24h` default and ceiling, ng |", "|---|---|---|"]
    for name, d in schema()["x-drugs"].items():
        rows.append("| `%s` | %s | %s |" % (name, "yes" if d["patient"] else "no",
                                           _num(d["max_ng_day"])))
    return "\n".join(rows) + "\n"


SECTIONS = {
    "drugs": _drugs_table,
    "commands": _commands_table,
    "args": _args_table,
    "hello": lambda: _result_table("hello"),
    "status": _status_table,
    "firmware-safe": lambda: _def_table("firmware_safe"),
    "errors": _errors_table,
    "events": _events_table,
    "plan": _plan_table,
    "plan-examples": _plan_examples,
}


def render(section: str) -> str:
    return SECTIONS[section]()


def sync_doc(text: str) -> tuple[str, list[str]]:
    """(text with every generated section rendered again, names of the sections that
    changed). A section is the text between `<!-- schema:NAME -->` and `<!-- /schema:NAME -->`."""
    stale = []

    def sub(m):
        new = render(m.group(1))
        if new != m.group(2):
            stale.append(m.group(1))
        return "<!-- schema:%s -->\n%s<!-- /schema:%s -->" % (m.group(1), new, m.group(1))

    return _MARK.sub(sub, text), stale


def main(argv=None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m pumprig.protocol",
                                 description="render docs/protocol.md's tables from the schema")
    ap.add_argument("--write-doc", metavar="MD", help="rewrite the generated sections of MD")
    ap.add_argument("--check-doc", metavar="MD", help="exit 1 when MD's sections are stale")
    a = ap.parse_args(argv)
    path = a.write_doc or a.check_doc
    if not path:
        ap.error("give --write-doc MD or --check-doc MD")
    with open(path) as f:
        text = f.read()
    new, stale = sync_doc(text)
    if a.write_doc and stale:
        with open(path, "w") as f:
            f.write(new)
    if stale:
        print("pumprig: %s sections %s: %s" % (path, "rewritten" if a.write_doc else "stale",
                                                ", ".join(stale)), file=sys.stderr)
    return 1 if stale and a.check_doc else 0


if __name__ == "__main__":
    raise SystemExit(main())
