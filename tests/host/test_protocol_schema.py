"""Issue 13: the protocol schema (host/pumprig/protocol.schema.json) is the one definition, and
the doc, the firmware's dictionary and the plan module agree with it. Each test fails when one
side changes without the other (the answers on a rig: hil/test_hil_protocol.py).
"""

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
from pumpcore import alarms, proto
from pumpcore import plan as core
from pumprig import plans, protocol

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def _stdlib_crc():
    """pumprig_hil/plan_crc.py: the documented rule in standard library only (no project
    import), loaded from its file alone."""
    path = ROOT / "hil" / "pumprig_hil" / "plan_crc.py"
    spec = importlib.util.spec_from_file_location("doc_plan_crc", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = path.read_text()
    assert not re.search(r"^\s*(from|import)\s+(pumpcore|pumprig)", src, re.M)
    return mod


def test_the_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(protocol.schema())


def test_the_doc_tables_are_rendered_from_the_schema():
    """docs/protocol.md's generated sections equal what the schema renders: editing one
    without the other (or without `python -m pumprig.protocol --write-doc`) fails."""
    text = DOC.read_text()
    _, stale = protocol.sync_doc(text)
    assert stale == [], "run: python -m pumprig.protocol --write-doc docs/protocol.md"
    for name in protocol.SECTIONS:
        assert "<!-- schema:%s -->" % name in text, name


def test_a_schema_change_shows_in_the_doc_check(monkeypatch):
    s = json.loads(json.dumps(protocol.schema()))
    s["x-commands"]["status"]["role"] = "clinician"
    monkeypatch.setattr(protocol, "schema", lambda: s)
    _, stale = protocol.sync_doc(DOC.read_text())
    assert "commands" in stale


def test_commands_match_the_firmware_dictionary():
    cmds = protocol.commands()
    assert list(cmds) == list(proto.COMMANDS)
    for name, (role, required, optional) in proto.COMMANDS.items():
        c = cmds[name]
        assert c["role"] == role, name
        assert set(c["args"]["required"]) == set(required), name
        assert set(c["args"]["properties"]) == set(required) | set(optional), name
        assert c["args"]["additionalProperties"] is False
        for code in c["errors"]:
            assert code in proto.ERROR_CODES, (name, code)


def test_integer_argument_ranges_match_the_firmware():
    r = proto.INT_RANGES
    ranges = {r[i]: (r[i + 1], r[i + 2]) for i in range(0, len(r), 3)}
    seen = set()
    defs = protocol.schema()["$defs"]
    for name, c in protocol.commands().items():
        for k, v in c["args"]["properties"].items():
            alts = v.get("anyOf", [v])
            ints = [a for a in alts if "integer" in str(a.get("type"))]
            ints += [defs[a["$ref"].rsplit("/", 1)[1]] for a in alts if "epoch_s" in a.get("$ref", "")]
            if not ints:
                continue
            lo, hi = ints[0].get("minimum"), ints[0].get("maximum")
            assert k in ranges, (name, k)
            assert (lo, hi) == ranges[k], (name, k, (lo, hi), ranges[k])
            seen.add(k)
    assert seen == set(ranges)


def test_error_codes_match():
    assert list(protocol.errors()) == list(proto.ERROR_CODES)
    assert protocol.schema()["$defs"]["error_code"]["enum"] == list(proto.ERROR_CODES)


def test_events_match_the_firmware_dictionary_and_source():
    """Every event name the firmware source can log or push is in the schema (and in
    proto.EVENTS): a new event without its payload in the schema fails here."""
    assert set(protocol.events()) == set(proto.EVENTS)
    pat = re.compile(r'(?:_event|log_event|log\.add)\("([a-z][a-z0-9_.]*)"|out\.append\(\("([a-z][a-z0-9_.]*)"')
    found = set()
    for f in (ROOT / "board").rglob("*.py"):
        for m in pat.findall(f.read_text()):
            found.update(x for x in m if x)
    assert "bolus.done" in found and "alarm.test" in found
    assert found <= set(protocol.events()), found - set(protocol.events())


def test_alarm_kinds_match():
    kinds = protocol.schema()["$defs"]["alarm_kind"]["enum"]
    assert set(kinds) == set(alarms.KINDS) | {"FIRMWARE"}


def test_plan_schema_matches_the_plan_module():
    d = protocol.schema()["$defs"]
    assert set(d["plan_in"]["properties"]) == set(core.TOP_KEYS)
    assert [v["properties"]["kind"]["const"] for v in d["basal"]["oneOf"]] == list(core.BASAL_KINDS)
    assert [v["properties"]["kind"]["const"] for v in d["start"]["oneOf"]] == list(core.START_KINDS)
    res = d["plan_in"]["properties"]["reservoir"]["properties"]
    assert res["on_empty"]["enum"] == list(core.ON_EMPTY)
    assert protocol.schema()["x-drugs"] == {
        n: {"patient": v["patient"], "max_ng_day": v["max_ng_day"]} for n, v in core.DRUGS.items()}
    # the documented defaults are the plan module's
    minimal = {"drug": "baclofen", "conc_ng_ml": 1000, "basal": {"kind": "stopped"}}
    out = core.validate(minimal)
    for path, value in protocol.plan_defaults().items():
        node = out
        for part in path.split("."):
            node = node[part]
        assert node == value, path
    assert out["caps"] == {"ng_24h": 1_000_000, "ng_1h": 1_000_000}


def test_command_and_event_examples_fit_the_schema_and_the_firmware():
    for name, c in protocol.commands().items():
        assert c.get("examples"), name
        for ex in c["examples"]:
            assert protocol.check_args(name, ex["args"]) == [], name
            proto.check_args(name, ex["args"])  # the firmware's own argument check
            assert protocol.check_result(name, ex["result"]) == [], name
            proto.encode_ok("x", ex["result"])  # fits a frame
    for name, e in protocol.events().items():
        for ex in e.get("examples", []):
            assert protocol.check_event(name, ex, pushed=False) == [], name
            assert protocol.check_event(name, dict(ex, epoch_s=None, ms=5)) == [], name


def test_the_schema_refuses_what_the_firmware_does_not_send():
    st = dict(protocol.commands()["status"]["examples"][0]["result"])
    assert protocol.check_result("status", st) == []
    assert protocol.check_result("status", dict(st, extra=1))
    assert protocol.check_result("status", dict(st, mode="running"))
    del st["gen"]
    assert protocol.check_result("status", st)
    assert protocol.check_event("bolus.done", {"dose_ng": 1, "volume_nl": 2})  # no epoch_s/ms
    assert protocol.check_error("motor.run", {"code": "BUSY", "message": "x"})
    assert protocol.check_error("motor.run", {"code": "THERAPY_RUNNING", "message": "x"}) == []


def test_plan_examples_are_what_the_plan_module_makes():
    exs = protocol.schema()["x-plan-examples"]
    files = {e["file"] for e in exs if "file" in e}
    assert files == {"examples/" + p.name for p in EXAMPLES}  # one per example file
    for ex in exs:
        assert protocol.check_plan(ex["input"], canonical=False) == [], ex["name"]
        assert protocol.check_plan(ex["plan"]) == [], ex["name"]
        assert core.validate(ex["input"]) == ex["plan"], ex["name"]
        assert core.crc(ex["plan"]) == ex["plan_crc"], ex["name"]
        if "file" in ex:
            raw, _ = plans.parse_plan(tomllib.loads((ROOT / ex["file"]).read_text()))
            assert raw == ex["input"], ex["file"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_stdlib_crc_of_every_example_plan(path):
    """The documented normalisation and CRC, in a few lines of standard library
    (hil/pumprig_hil/plan_crc.py), give the plan module's CRC for every example plan's wire form; the
    virtual rig's plan_crc for the same plans: hil/test_hil_protocol.py."""
    mod = _stdlib_crc()
    raw, _ = plans.parse_plan(tomllib.loads(path.read_text()))  # TOML -> the documented wire form
    assert mod.normalise(raw) == core.validate(raw)
    assert mod.plan_crc(raw) == core.crc(core.validate(raw))
    ex = [e for e in protocol.schema()["x-plan-examples"] if e.get("file", "").endswith(path.name)]
    assert mod.plan_crc(raw) == ex[0]["plan_crc"]


def test_stdlib_crc_of_the_other_schema_examples_and_drug_table():
    mod = _stdlib_crc()
    assert mod.DRUG_MAX_NG_DAY == {n: d["max_ng_day"] for n, d in protocol.schema()["x-drugs"].items()}
    assert mod.RESERVOIR_DEFAULTS == {k.split(".")[1]: v for k, v in protocol.plan_defaults().items()
                                      if k.startswith("reservoir.")}
    for ex in protocol.schema()["x-plan-examples"]:
        assert mod.plan_crc(ex["input"]) == ex["plan_crc"], ex["name"]


def test_plan_check_json_prints_the_wire_plan_and_its_crc(home):
    """`pumprig plan check --json` offline: the canonical plan, its canonical JSON and CRC."""
    path = ROOT / "examples" / "p9-morphine-rich.toml"
    out = subprocess.run([sys.executable, "-m", "pumprig.cli", "plan", "check", "--json", str(path)],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    got = json.loads(out)
    mod = _stdlib_crc()
    assert got["wire"] == mod.canonical_json(got["plan"])
    assert got["plan_crc"] == mod.plan_crc(got["plan"]) == "%08x" % (
        __import__("zlib").crc32(got["wire"].encode()) & 0xFFFFFFFF)
    assert protocol.check_plan(got["plan"]) == []


def test_documented_example_frames_are_valid():
    """Every frame line in docs/protocol.md decodes and carries its right CRC (the requests
    are also sent to a virtual rig: hil/test_hil_protocol.py)."""
    frames = doc_frames()
    assert len(frames) >= 5
    for line in frames:
        f = proto.decode(line.encode())
        assert f.error is None, (line, f)


_FRAME = r"[@=!][A-Za-z0-9_-]+ [a-z0-9._]+ \{[^`\n]*\*[0-9a-f]{8}"


def doc_frames():
    """The complete frame lines of docs/protocol.md: in code blocks (after `> `, `< `,
    `line:`) and in `backticks`; lines shortened with `...` are not frames."""
    text = DOC.read_text()
    out = [m.group(1) for m in re.finditer(r"^(?:[<>] |line:\s+)?(%s)(?:\\n)?$" % _FRAME, text, re.M)]
    out += [m.group(1) for m in re.finditer(r"`(%s)(?:\\n)?`" % _FRAME, text)]
    return out


def test_the_firmware_safe_state_answers_fit_the_schema():
    """board/bootsafe.py (the FIRMWARE safe state) answers hello, status and maintenance
    itself: its `info` object, taken from its source, and its answers fit the schema."""
    import ast

    path = ROOT / "board" / "bootsafe.py"
    tree = ast.parse(path.read_text())
    (expr,) = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
               and [getattr(t, "id", None) for t in n.targets] == ["info"]]
    info = eval(compile(ast.Expression(expr), str(path), "eval"),  # noqa: S307 (our source)
                {"name": "pico", "uid": "e6614103e7452d2f", "bad": ["pumpcore/app.mpy"],
                 "logged": True, "en": object()})
    spec = importlib.util.spec_from_file_location("bootsafe_for_schema", path)
    bootsafe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootsafe)
    for cmd, name in (("hello", "ok"), ("status", "ok"), ("maintenance", "ok"), ("auth", "err"),
                      ("plan.set", "err")):
        line = proto.encode_request("s1", cmd, {}).rstrip(b"\n")
        f = proto.decode(bootsafe.answer(line, info))
        assert f.error is None and f.name == name, (cmd, f)
        assert protocol.check_response(cmd, f) == [], (cmd, f.body)
        if cmd in ("hello", "status"):
            assert protocol.problems("#/$defs/firmware_safe", f.body) == []
