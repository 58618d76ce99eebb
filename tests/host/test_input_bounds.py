"""Host input bounds (issue 12, finding 8, host part): no value and no byte the CLI is given
ends in a traceback or is taken as it is when it makes no sense.

Before: `--timeout nan`, `--timeout -1` and `--fault stall@-1d` were accepted, and a plan file
with a non-UTF-8 byte raised UnicodeDecodeError out of `pumprig plan check` (230 of 3,000
mutated plan files). Now each is one `pumprig:` error line and a non-zero exit.
"""

import glob
import os
import random

import pytest
from pumprig import cli
from pumprig.errors import PumprigError
from pumprig.simulate import parse_fault

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLANS = sorted(glob.glob(os.path.join(ROOT, "examples", "*.toml")))


def run(argv, capsys):
    """(exit code, stderr lines) of the CLI run in-process: a traceback fails the test."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    return rc, [x for x in err.splitlines() if x.strip()]


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "0", "-inf", "1e999", "x", "100000"])
def test_a_timeout_that_is_not_a_finite_positive_time_is_refused(value, capsys):
    rc, err = run(["--port", "/dev/null", "--timeout", value, "status"], capsys)
    assert rc == 2
    assert err[-1].startswith("pumprig: error: argument --timeout:"), err


def test_a_good_timeout_still_parses():
    args = cli.build_parser().parse_args(["--timeout", "0.5", "status"])
    assert args.timeout == 0.5


@pytest.mark.parametrize("spec", [
    "stall@-1d", "stall@nan", "stall@infd", "stall@-inf", "stall@1e999d", "stall@30d:-2h",
    "stall@30d:0h", "stall@30d:nan", "stall@", "@30d", "stall", "stall@30x", "stall@99999d",
    "battery=nan@1d", "battery=-3V@1d", "battery=infV@1d", "battery=@1d", "battery@1d",
    "stall=3@1d", "melt@1d", "stall@1d:2h:3h", "stall@\udcff", "",
])
def test_a_malformed_fault_spec_is_a_pumprig_error(spec):
    with pytest.raises(PumprigError) as e:
        parse_fault(spec)
    assert "--fault" in str(e.value)


def test_good_fault_specs_still_parse():
    assert parse_fault("stall@30d:2h") == {"kind": "stall", "at_s": 30 * 86400, "for_s": 7200}
    assert parse_fault("occlusion@12h:30min")["for_s"] == 1800
    assert parse_fault("battery=3.2V@60d")["mv"] == 3200
    assert parse_fault("power@0d")["at_s"] == 0
    assert parse_fault("stall@1.5 h")["at_s"] == 5400


def test_a_malformed_fault_on_the_command_line_is_one_pumprig_line(capsys):
    rc, err = run(["simulate", PLANS[0], "--fault", "stall@-1d"], capsys)
    assert rc == 1 and len(err) == 1 and err[0].startswith("pumprig: --fault"), err


def test_a_bolus_file_with_any_bytes_is_a_pumprig_error(tmp_path):
    from pumprig.simulate import load_bolus_file

    p = tmp_path / "b.txt"
    p.write_bytes(b"36h\n\xff\xfe2d\n")
    with pytest.raises(PumprigError, match="UTF-8"):
        load_bolus_file(p)
    p.write_bytes(b"-1d\n")
    with pytest.raises(PumprigError):
        load_bolus_file(p)


def _mutate(data, rng):
    """One to four random byte edits: replace (any byte, non-UTF-8 ones included), insert,
    delete, duplicate a slice."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if op == 0 and i < len(b):
            b[i] = rng.randrange(256)
        elif op == 1:
            b[i:i] = bytes([rng.choice((rng.randrange(256), 0x80, 0xC3, 0xFF, 0xED))])
        elif op == 2 and i < len(b):
            del b[i:i + rng.randint(1, 8)]
        else:
            j = min(len(b), i + rng.randint(1, 16))
            b[i:i] = b[i:j]
    return bytes(b)


def test_3000_mutated_plan_files_never_give_a_traceback(tmp_path, capsys, monkeypatch):
    """`pumprig plan check` in-process on 3,000 seeded random byte mutations of the example
    plans: each is accepted (exit 0) or refused with exactly one `pumprig:` line (exit 1);
    any exception out of main() fails the test. (The parser is built once: building it is
    most of a run's time, and it does not depend on the file.)"""
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    rng = random.Random(12)
    originals = [open(p, "rb").read() for p in PLANS]
    path = tmp_path / "plan.toml"
    refused = non_utf8 = 0
    for k in range(3000):
        data = _mutate(rng.choice(originals), rng)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            non_utf8 += 1
        path.write_bytes(data)
        rc, err = run(["plan", "check", str(path)], capsys)
        if rc == 0:
            continue
        refused += 1
        assert rc == 1, (k, rc, err)
        assert len(err) == 1 and err[0].startswith("pumprig: "), (k, data, err)
    assert non_utf8 >= 200 and refused >= 1000, (non_utf8, refused)


def test_a_plan_file_that_cannot_be_read_is_one_pumprig_line(tmp_path, capsys):
    rc, err = run(["plan", "check", str(tmp_path)], capsys)          # a directory
    assert rc == 1 and len(err) == 1 and err[0].startswith("pumprig: "), err
    rc, err = run(["plan", "check", str(tmp_path / "none.toml")], capsys)
    assert rc == 1 and err == ["pumprig: %s: no such plan file" % (tmp_path / "none.toml")]
