"""The command line: user mistakes give `pumprig: ...` and a non-zero exit, never a traceback;
commands against a Server on a pty print what they should."""

import json
import re
from pathlib import Path

import pytest
from pumprig import cli
from pumprig import keys as keystore
from rigpty import CLINICIAN_KEY, PATIENT_KEY, UID, PtyRig

REPO = Path(__file__).resolve().parents[2]
P1 = REPO / "examples" / "p1-baclofen-continuous.toml"


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PUMPRIG_HOME", str(tmp_path))
    monkeypatch.delenv("PUMPRIG_PORT", raising=False)
    return tmp_path


@pytest.fixture
def rig(home):
    keystore.KeyStore(home).save(UID, {"patient": PATIENT_KEY, "clinician": CLINICIAN_KEY})
    r = PtyRig()
    yield r
    r.close()


def test_no_port_is_a_usage_error(capsys, home):
    rc, out, err = run(capsys, "status")
    assert rc == 2 and "pumprig: error: no port" in err


def test_missing_port(capsys, home, tmp_path):
    rc, out, err = run(capsys, "--port", str(tmp_path / "ttyACM9"), "status")
    assert rc == 1 and err.startswith("pumprig: no such port")


def test_port_from_env(capsys, home, tmp_path, monkeypatch):
    monkeypatch.setenv("PUMPRIG_PORT", str(tmp_path / "ttyX"))
    rc, out, err = run(capsys, "alarms")
    assert rc == 1 and "ttyX" in err


def test_unknown_command_and_bad_option(capsys, home):
    assert run(capsys, "fly")[0] == 2
    assert run(capsys, "--timeout", "soon", "status")[0] == 2
    assert run(capsys, "log", "--format", "xml")[0] == 2


def test_invalid_plan_files(capsys, home, tmp_path):
    rc, out, err = run(capsys, "plan", "check", str(tmp_path / "nope.toml"))
    assert rc == 1 and err.startswith("pumprig: ") and "no such plan file" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    rc, out, err = run(capsys, "plan", "check", str(bad))
    assert rc == 1 and err.startswith("pumprig: ")
    rc, out, err = run(capsys, "--port", "/dev/null/x", "program", str(bad), "--yes")
    assert rc == 1 and err.startswith("pumprig: ")  # the plan is checked before the port


def test_plan_check(capsys, home):
    rc, out, err = run(capsys, "plan", "check", str(P1), "--fill", "20 mL")
    assert rc == 0, err
    assert re.search(r"days to LOW\s+90\.0\n", out)
    assert re.search(r"projected refill\s+\d{4}-\d\d-\d\d", out)
    rc, out, err = run(capsys, "plan", "check", str(P1), "--fill", "20 mL", "--json")
    doc = json.loads(out)
    assert doc["summary"]["volume_nl_day"] == 200000
    rc, out, err = run(capsys, "plan", "check", str(P1), "--fill", "lots")
    assert rc == 1 and err.startswith("pumprig: ")


def test_status_json(capsys, rig):
    rc, out, err = run(capsys, "--port", rig.path, "status", "--json")
    assert rc == 0, err
    st = json.loads(out)
    for k in ("firmware", "protocol", "board", "mode", "reservoir_ml", "battery_v",
              "battery_state", "alarms", "plan_crc"):
        assert k in st
    assert st["reservoir_ml"] == 18.5 and st["battery_v"] == 3.65 and st["alarms"] == ["CLOCK"]


def test_status_human(capsys, rig):
    rc, out, err = run(capsys, "--port", rig.path, "status")
    assert rc == 0
    assert "reservoir       18.500 mL" in out and "3.65 V (ok)" in out


def test_no_key_for_rig(capsys, home):
    r = PtyRig()
    try:
        rc, out, err = run(capsys, "--port", r.path, "status")
    finally:
        r.close()
    assert rc == 1 and "no keys for rig" in err and "provision" in err


def test_wrong_firmware_version(capsys, rig):
    r = PtyRig(protocol=9)
    try:
        rc, out, err = run(capsys, "--port", r.path, "status")
    finally:
        r.close()
    assert rc == 1 and "protocol 9" in err


def test_timeout(capsys, rig):
    rig.drop = 100
    rc, out, err = run(capsys, "--port", rig.path, "--timeout", "0.05", "status")
    assert rc == 1 and "no answer" in err


def test_patient_role_refused(capsys, rig):
    rc, out, err = run(capsys, "--port", rig.path, "--role", "patient", "ack")
    assert rc == 1 and "FORBIDDEN" in err


def test_program_shows_diff_and_asks(capsys, rig, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    rc, out, err = run(capsys, "--port", rig.path, "program", str(P1))
    assert rc == 1 and "not programmed" in out
    assert "plan.set" not in rig.app.calls


def test_program_yes(capsys, rig):
    rc, out, err = run(capsys, "--port", rig.path, "program", str(P1), "--yes")
    # the fake rig answers a fixed plan CRC, which does not match: reported, not a traceback
    assert "plan.set" in rig.app.calls
    assert rc == 1 and "plan CRC" in err


def test_program_yes_crc_checked(capsys, rig):
    rig.app.fixed_crc = False
    rc, out, err = run(capsys, "--port", rig.path, "program", str(P1), "--yes")
    assert rc == 0, err
    assert "no plan running" in out and "programmed: plan CRC" in out
    rc, out, err = run(capsys, "--port", rig.path, "program", str(P1))
    assert rc == 0 and "no change" in out and "nothing to send" in out
    assert rig.app.calls.count("plan.set") == 1


def test_program_compares_the_whole_therapy_state(capsys, rig, monkeypatch):
    """Finding 5: the plan CRC matched on a rig whose therapy was not the plan's, and
    `program` said there was nothing to send. The same CRC on a rig in the safe state is a
    change to send; a rig whose generation does not move after plan.set is reported."""
    rig.app.fixed_crc = False
    assert run(capsys, "--port", rig.path, "program", str(P1), "--yes")[0] == 0
    rig.app.therapy = "safe"
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    rc, out, err = run(capsys, "--port", rig.path, "program", str(P1))
    assert rc == 1 and "holds this plan, but its therapy is safe" in out, out
    rc, out, err = run(capsys, "--port", rig.path, "program", str(P1), "--yes")
    assert rc == 0 and rig.app.calls.count("plan.set") == 2, err
    rig.app.therapy = "stopped"
    rig.app.bump = False  # answers without committing anything
    rc, out, err = run(capsys, "--port", rig.path, "program", str(P1), "--yes")
    assert rc == 1 and err.startswith("pumprig: after programming"), err


def test_refill_checks_the_rig_state_after(capsys, rig):
    """Finding 4: a refill the rig answered but did not apply whole (no new generation, the
    old concentration, no bridge) is reported, not printed as done."""
    rc, out, err = run(capsys, "--port", rig.path, "refill", "--volume", "20 mL",
                       "--conc", "500 mcg/mL")
    assert rc == 0 and "bridge" in out, err
    rig.app.bump = False
    rc, out, err = run(capsys, "--port", rig.path, "refill", "--volume", "20 mL",
                       "--conc", "250 mcg/mL")
    assert rc == 1 and err.startswith("pumprig: after the refill"), err


def test_read_commands(capsys, rig):
    rc, out, err = run(capsys, "--port", rig.path, "alarms", "--json")
    assert rc == 0 and json.loads(out)[0]["kind"] == "CLOCK"
    rc, out, err = run(capsys, "--port", rig.path, "monitor", "--once")
    assert rc == 0 and "reservoir" in out and "\x1b[" not in out
    rc, out, err = run(capsys, "--port", rig.path, "bolus", "--json")
    assert rc == 0 and json.loads(out)["dose_ng"] == 100000


def test_refill_units(capsys, rig):
    rc, out, err = run(capsys, "--port", rig.path, "refill", "--volume", "20mL", "--conc", "lots")
    assert rc == 1 and err.startswith("pumprig: ")
    assert "refill" not in rig.app.calls


def test_next_offset_change():
    from pumprig import tz

    off = tz.offset_fn("Europe/Paris")
    t0 = 1767225600  # 2026-01-01 00:00 UTC
    when, new = tz.next_offset_change(off, t0)
    assert when == 1774746000 and new == 7200  # 2026-03-29 01:00 UTC, CET -> CEST
    # from just before the autumn change: back to CET at 2026-10-25 01:00 UTC
    assert tz.next_offset_change(off, 1792890000 - 5) == (1792890000, 3600)
    assert tz.next_offset_change(tz.offset_fn("UTC"), t0) is None
    with pytest.raises(cli.PumprigError):
        tz.offset_fn("Mars/Olympus")


def test_extension_list_is_importable():
    p = cli.build_parser()
    assert p.prog == "pumprig"
