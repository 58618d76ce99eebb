"""Issue 14 "first hour" and issue 16 (static command table) for the host CLI. Each test names
the finding it covers; each failed on the code before this branch. A user mistake is answered
with one `pumprig:` line and a non-zero exit, never a traceback."""

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from pumprig import cli
from pumprig.progress import Progress
from rigpty import CLINICIAN_KEY, PATIENT_KEY, UID, PtyRig

REPO = Path(__file__).resolve().parents[2]
P1 = str(REPO / "examples" / "p1-baclofen-continuous.toml")
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
needs_mpy = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def one_line(rc, err):
    assert rc == 1, err
    assert err.startswith("pumprig: ") and err.count("\n") == 1, err
    assert "\r" not in err
    return err


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PUMPRIG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PUMPRIG_PORT", raising=False)
    return tmp_path / "home"


@pytest.fixture
def fake(home):
    from pumprig import keys as keystore

    keystore.KeyStore(home).save(UID, {"patient": PATIENT_KEY, "clinician": CLINICIAN_KEY})
    r = PtyRig()
    yield r
    r.close()


@pytest.fixture
def no_run(monkeypatch):
    """A simulation that must not start: the check has to come first."""
    def boom(*a, **kw):
        raise AssertionError("the simulation ran before the arguments were checked")

    monkeypatch.setattr("pumprig.simulate.command.simulate", boom)


# --- simulate --plot, checked before the run ---------------------------------------------------

def test_plot_into_a_missing_folder_is_refused_before_the_run(capsys, home, no_run):
    """Finding: `simulate --plot /nonexistent/x.png` ran the whole simulation, then a traceback."""
    err = one_line(*run(capsys, "simulate", P1, "--plot", "/nonexistent/x.png")[::2])
    assert "--plot /nonexistent/x.png: no folder /nonexistent" in err


def test_plot_with_an_unknown_format_is_refused_before_the_run(capsys, home, no_run, tmp_path):
    """Finding: `simulate --plot x.xyz` ran the whole simulation, then a traceback."""
    err = one_line(*run(capsys, "simulate", P1, "--plot", str(tmp_path / "x.xyz"))[::2])
    assert ".xyz image format" in err and ".png" in err
    err = one_line(*run(capsys, "simulate", P1, "--plot", str(tmp_path / "x.pgn"))[::2])
    assert "did you mean 'png'" in err


# --- demo --out -----------------------------------------------------------------------------

def test_demo_out_in_a_missing_folder(capsys, home, tmp_path):
    """Finding: `demo --out` into a folder that cannot be created was a traceback."""
    (tmp_path / "afile").write_text("x")
    err = one_line(*run(capsys, "demo", "--out", str(tmp_path / "afile" / "out"))[::2])
    assert "%s is a file, not a folder" % (tmp_path / "afile") in err
    err = one_line(*run(capsys, "demo", "--out", str(tmp_path / "nope" / "deeper"))[::2])
    assert "no folder %s" % (tmp_path / "nope") in err
    err = one_line(*run(capsys, "demo", "--out", str(tmp_path / "afile"))[::2])
    assert "is a file" in err


@pytest.mark.parametrize("argv", [
    ["bench", "--port", "sim", "--rate", "0.5 mL/day", "--duration", "10min", "--out"],
    ["calibrate", "--port", "sim", "--out"],
    ["sim", "--link", "LINK", "--state"],
])
def test_out_folders_are_checked_before_the_work(capsys, home, tmp_path, monkeypatch, argv):
    """First hour, on this branch: `bench --out` and `calibrate --out` under a regular file
    were a traceback (NotADirectoryError), raised after the whole run when the report was
    written; under a missing folder they created the whole tree, as `sim --state` did. Now
    each is one `pumprig:` line before any rig starts, and nothing is created."""
    def boom(*a, **kw):
        raise AssertionError("a rig started before --out/--state was checked")

    monkeypatch.setattr("pumprig.bench.command.make_bench_rig", boom)
    monkeypatch.setattr("pumprig.virtual.launcher.Rig", boom)
    (tmp_path / "afile").write_text("x")
    argv = [str(tmp_path / "link") if a == "LINK" else a for a in argv]
    opt = argv[-1]
    err = one_line(*run(capsys, *argv, str(tmp_path / "afile" / "r"))[::2])
    assert err == "pumprig: %s %s: %s is a file, not a folder\n" % (
        opt, tmp_path / "afile" / "r", tmp_path / "afile"), err
    err = one_line(*run(capsys, *argv, str(tmp_path / "nope" / "r"))[::2])
    assert "no folder %s (create it first, or give another %s)" % (tmp_path / "nope", opt) in err
    assert not (tmp_path / "nope").exists()
    err = one_line(*run(capsys, *argv, str(tmp_path / "afile"))[::2])
    assert "afile: is a file, not a folder" in err


def test_flash_without_a_port_says_how_to_give_one(capsys, home):
    """On this branch: `pumprig flash` said "no port: give --port PORT", where every other
    command also names PUMPRIG_PORT and `pumprig list`."""
    err = one_line(*run(capsys, "flash")[::2])
    assert err == ("pumprig: no port: give --port PORT or set PUMPRIG_PORT (see `pumprig "
                   "list`)\n")


def test_fills_are_checked_in_the_users_terms_before_the_run(capsys, home, no_run, tmp_path):
    """First hour, on this branch: `simulate --fill "0 mL"` got "volume_nl must be an integer
    1..1000000000 (BAD_ARGS)" from the rig; a plan file's `fill = "200 mL"` got "--fill 200 mL
    is more than the rig's 20 mL reservoir", naming an option the user never gave, and a
    scenario refill above the reservoir failed mid-run."""
    err = one_line(*run(capsys, "simulate", P1, "--fill", "0 mL")[::2])
    assert err == "pumprig: --fill: '0 mL' is no volume to fill; write it like '20 mL'\n"
    err = one_line(*run(capsys, "simulate", P1, "--fill", "21 mL")[::2])
    assert err == "pumprig: --fill: 21 mL is more than the virtual rig's 20 mL reservoir\n"
    text = Path(P1).read_text()
    big = tmp_path / "big.toml"
    big.write_text(text.replace('fill = "20 mL"', 'fill = "200 mL"'))
    err = one_line(*run(capsys, "simulate", str(big))[::2])
    assert err == ("pumprig: %s: reservoir.fill: 200 mL is more than the virtual rig's 20 mL "
                   "reservoir\n" % big)
    refill = tmp_path / "refill.toml"
    refill.write_text(text + '\n[scenario]\nevents = [{ at = "1 d", refill = "25 mL" }]\n')
    err = one_line(*run(capsys, "simulate", str(refill))[::2])
    assert "%s: scenario.events[0].refill: 25 mL is more than" % refill in err


@needs_mpy
def test_demo_prints_a_short_readable_account(capsys, home, tmp_path):
    """First hour, `make demo` from a fresh clone: the flash step echoed mpremote's `cp
    /tmp/pumprig-flash-.../x.mpy :x.mpy.new` for each of 43 files and said "board: linux, mpy
    2822"; the summary named the plan by a bare hex number. Now: the steps, a few flash lines
    in words, and "plan CRC"."""
    rc, out, err = run(capsys, "demo", "--days", "2", "--out", str(tmp_path / "out"))
    assert rc == 0, err
    lines = out.splitlines()
    assert not [ln for ln in lines if ln.strip().startswith("cp ")], out
    assert "   board: MicroPython on linux, .mpy v6.3" in lines, out
    flash = lines[lines.index("2. flashing the firmware with pumprig flash") + 1:
                  lines.index("3. programming p1-baclofen-continuous.toml")]
    assert len(flash) <= 8, flash
    (plan,) = [ln for ln in lines if ln.startswith("   plan ")]
    assert plan.startswith("   plan CRC ") and "(baclofen), 2 days from" in plan, plan
    assert (tmp_path / "out" / "demo-delivery.png").stat().st_size > 0


# --- global options anywhere, --json everywhere -------------------------------------------------

def test_global_options_go_before_or_after_the_command(capsys, fake):
    """Finding: --port worked only before the subcommand for most commands."""
    for argv in (["--port", fake.path, "status", "--json"],
                 ["status", "--port", fake.path, "--json"],
                 ["--json", "status", "--port", fake.path, "--timeout", "2"],
                 ["status", "--json", "--role", "patient", "--port", fake.path]):
        rc, out, err = run(capsys, *argv)
        assert rc == 0, (argv, err)
        assert json.loads(out)["reservoir_ml"] == 18.5, argv
    rc, out, err = run(capsys, "plan", "check", P1, "--json")
    assert rc == 0 and "plan" in json.loads(out)
    rc, out, err = run(capsys, "--json", "plan", "check", P1)
    assert rc == 0 and "plan" in json.loads(out)
    rc, out, err = run(capsys, "clock", "show", "--port", fake.path, "--json")
    assert rc == 0 and isinstance(json.loads(out), dict)


def test_program_and_alarm_test_have_json(capsys, fake):
    """Finding: `program` had no --json."""
    fake.app.fixed_crc = False
    rc, out, err = run(capsys, "program", P1, "--yes", "--json", "--port", fake.path)
    assert rc == 0, err
    res = json.loads(out)
    assert res["programmed"] is True and res["plan_crc"] and res["diff"]
    rc, out, err = run(capsys, "program", P1, "--json", "--port", fake.path)
    assert rc == 0 and json.loads(out)["unchanged"] is True
    rc, out, err = run(capsys, "alarm-test", "--json", "--port", fake.path)
    assert rc == 0 and json.loads(out) == {"alarm_test": "started"}
    rc, out, err = run(capsys, "monitor", "--once", "--json", "--port", fake.path)
    assert rc == 0 and json.loads(out)["status"]["reservoir_ml"] == 18.5


def test_every_rig_command_takes_json():
    """Every command that reads or writes a rig or a plan accepts --json."""
    p = cli.build_parser()
    for argv in (["status"], ["program", "x.toml"], ["refill", "--volume", "1 mL"], ["bolus"],
                 ["alarms"], ["ack"], ["alarm-test"], ["log"], ["clock", "sync"],
                 ["clock", "show"], ["monitor"], ["provision"], ["list"],
                 ["plan", "check", "x.toml"], ["flash"], ["simulate", "x.toml"], ["demo"]):
        assert p.parse_args(argv + ["--json"]).json is True, argv


def test_the_command_table_is_static(capsys):
    """Issue 16: cli imported its extensions with importlib and skipped the missing ones."""
    src = (REPO / "host" / "pumprig" / "cli.py").read_text()
    assert "importlib" not in src
    names = {n for _, ns in cli.COMMANDS for n in ns}
    assert {"sim", "flash", "simulate", "bench", "calibrate", "demo"} <= names
    for name in names:
        assert cli.main([name, "--help"]) == 0, name
        assert "usage: pumprig " + name in capsys.readouterr().out


# --- messages in human units ----------------------------------------------------------------

def test_refill_refusals_in_option_names_and_units():
    """Finding: "volume_nl must be 1..20000000 (BAD_ARGS)", "refill_by_epoch_s must be a time
    in the future"."""
    from pumprig.errors import DeviceError

    assert cli.device_text(DeviceError("BAD_ARGS", "volume_nl must be 1..20000000")) == \
        "--volume must be 1 nL to 20 mL"
    text = cli.device_text(DeviceError("BAD_ARGS", "refill_by_epoch_s must be a time in the "
                                       "future"), {"epoch_s": 1_800_000_000})
    assert text == "--refill-by must be a date in the future (the rig's clock reads " \
        "2027-01-15 08:00:00 UTC)"
    # on this branch: the command dictionary's range check was passed through as it came
    assert cli.device_text(DeviceError("BAD_ARGS", "conc_ng_ml must be an integer "
                                       "1..1000000000")) == "--conc must be 1 ng/mL to 1 g/mL"


def test_refill_with_no_concentration_is_refused_before_the_rig(capsys, fake):
    """On this branch: `refill --conc "0 mg/mL"` got "--conc must be an integer
    1..1000000000 (BAD_ARGS)" from the rig."""
    err = one_line(*run(capsys, "refill", "--volume", "20 mL", "--conc", "0 mg/mL",
                        "--port", fake.path)[::2])
    assert err == "pumprig: --conc 0 mg/mL: give the new concentration, more than 0 mg/mL\n"
    assert "refill" not in fake.app.calls


def test_refill_by_in_the_past_is_refused_before_the_rig(capsys, fake):
    err = one_line(*run(capsys, "refill", "--volume", "20 mL", "--refill-by", "2020-01-01",
                        "--port", fake.path)[::2])
    assert "--refill-by 2020-01-01: must be a date in the future" in err
    assert "refill" not in fake.app.calls


@needs_mpy
def test_a_blank_rig_status_has_no_none(capsys, monkeypatch):
    """Finding: a freshly flashed rig (no plan, no refill) showed `drug None -/mL`."""
    from pumprig.simulate import open_rig

    rig, home = open_rig()
    try:
        monkeypatch.setenv("PUMPRIG_HOME", home)
        for _ in range(100):  # the firmware may still be starting
            rc, out, err = run(capsys, "status", "--port", rig.link)
            if rc == 0:
                break
    finally:
        rig.stop()
        shutil.rmtree(home, ignore_errors=True)
    assert rc == 0, err
    assert "None" not in out, out
    drug = [ln for ln in out.splitlines() if ln.startswith("drug")][0]
    assert "no plan yet" in drug and "pumprig program" in drug, drug


# --- progress -------------------------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_quiet_off_a_terminal():
    """Finding: progress bars left `\\r` clutter in logs."""
    buf = io.StringIO()
    with Progress("simulating", 10, unit="day", stream=buf) as show:
        for i in range(1, 11):
            show(i, 10)
    assert buf.getvalue() == ""


def test_an_error_never_lands_on_the_bar_line():
    """Finding: "log needs the patient role" was printed on the progress bar's line."""
    buf = _Tty()
    with pytest.raises(RuntimeError):
        with Progress("simulating", 10, unit="day", stream=buf) as show:
            show(3, 10)
            assert "simulating" in buf.getvalue()
            raise RuntimeError("boom")
    # the bar erased its line: what is written next starts at the beginning of a line
    assert buf.getvalue().endswith("\r") or buf.getvalue().endswith("\n"), repr(buf.getvalue())
    assert buf.getvalue().rsplit("\r", 1)[-1] == ""


# --- on the real firmware -------------------------------------------------------------------

@needs_mpy
def test_status_on_a_blank_rig_says_pumprig_flash(capsys, home):
    """Finding: `status` on a blank rig said "run mpremote reset"; the fix is `pumprig flash`."""
    from pumprig.virtual.rig import VirtualRig

    r = VirtualRig(blank=True).start()
    try:
        err = one_line(*run(capsys, "status", "--port", r.link, "--timeout", "0.5")[::2])
    finally:
        r.stop()
    assert "no pumprig firmware" in err and "pumprig flash --port %s" % r.link in err
    assert "mpremote" not in err


@needs_mpy
def test_simulate_power_fault_from_its_own_help(capsys, home):
    """Finding: `simulate --fault power@45d` (its own help's example) failed with "log needs
    the patient role (AUTH_REQUIRED)" on the progress bar's line."""
    rc, out, err = run(capsys, "simulate", P1, "--days", "46", "--fault", "power@45d")
    assert rc == 0, err
    assert "AUTH" not in out + err and "\r" not in out + err
    assert "fault          power at day 45.00: rig restarted" in out


@needs_mpy
def test_simulate_stall_fault_is_in_the_summary_and_raises_stall(capsys, home):
    """Finding: `--fault stall@30d:2h` (the README's example) raised no alarm and the summary did
    not mention the fault: at P1's rate a segment lasts 72 min and STALL came only after 3
    stalled segments. The firmware now raises STALL once a stall it has seen lasts 15 min
    (pumpcore.app.STALL_CONFIRM_MS): within the 2 h, and the summary names the fault and says
    how long after it began the alarm came."""
    rc, out, err = run(capsys, "simulate", P1, "--days", "31", "--fault", "stall@30d:2h",
                       "--json")
    assert rc == 0, err
    r = json.loads(out)
    (f,) = r["faults"]
    assert f["kind"] == "stall" and f["alarms"] == ["STALL"], f
    # seen within the hour (segment end or battery sample), confirmed 15 min later
    assert 15 * 60 <= f["alarm_after_s"] <= 75 * 60 + 60, f
    assert [a["kind"] for a in r["alarms"]] == ["STALL"]
    rc, out, err = run(capsys, "simulate", P1, "--days", "31", "--fault", "stall@30d:2h")
    assert rc == 0, err
    line = [ln for ln in out.splitlines() if ln.startswith("fault ")]
    assert len(line) == 1 and line[0].startswith(
        "fault          stall at day 30.00 for 2 h: ") and "alarm STALL after " in line[0], out
    assert "STALL          critical" in out


def test_fault_line_says_the_alarm_delay_in_hours_and_minutes():
    """On this branch: "alarm ERI after 1.183333 h"."""
    from pumprig.simulate.report import fault_line

    f = {"kind": "battery", "mv": 3200, "at_s": 60 * 86_400, "alarms": ["ERI"]}
    assert fault_line(dict(f, alarm_after_s=4260)).endswith(": alarm ERI after 1 h 11 min")
    assert fault_line(dict(f, alarm_after_s=3060)).endswith(": alarm ERI after 51 min")
    assert fault_line(dict(f, alarm_after_s=7200)).endswith(": alarm ERI after 2 h 0 min")
    assert fault_line(dict(f, alarm_after_s=20)).endswith(": alarm ERI after 20 s")
    assert fault_line(dict(f, alarm_after_s=None)).endswith(": alarm ERI")


@needs_mpy
def test_simulate_short_stall_says_why_no_alarm(capsys, home):
    """A stall shorter than the 15 min confirmation raises nothing; the summary says the rule."""
    rc, out, err = run(capsys, "simulate", P1, "--days", "31", "--fault", "stall@30d:5min")
    assert rc == 0, err
    assert "fault          stall at day 30.00 for 5 min: " in out, out
    assert "no alarm (the firmware raises STALL once a stall" in out and "lasts 15 min" in out
    assert "STALL          critical" not in out


@needs_mpy
def test_simulate_plot_has_the_panels(capsys, home, tmp_path):
    """Issue 14 reports: the ideal visible over the measured line, a measured-minus-ideal
    panel, fault markers, units on the axes, 150 dpi or more."""
    png = tmp_path / "p.png"
    rc, out, err = run(capsys, "simulate", P1, "--days", "3", "--fault", "power@1d",
                       "--plot", str(png), "--json")
    assert rc == 0, err
    r = json.loads(out)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    seen = {}

    def keep(fig, *a, **kw):
        seen["fig"], seen["dpi"] = fig, kw.get("dpi")
        return orig(fig, *a, **kw)

    from matplotlib.figure import Figure

    orig = Figure.savefig
    Figure.savefig = keep
    try:
        from pumprig.simulate import plot

        plot(r, tmp_path / "q.png")
    finally:
        Figure.savefig = orig
    fig = seen["fig"]
    assert seen["dpi"] >= 150
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[0] == "cumulative delivery (mL)" and "measured − ideal (µL)" in labels
    a1 = fig.axes[0]
    lines = {ln.get_label(): ln for ln in a1.get_lines()}
    assert lines["ideal (plan)"].get_zorder() > lines["measured by the rig"].get_zorder()
    assert "fault: power" in [t.get_text() for t in a1.texts]
    assert fig.axes[-1].get_xlabel().endswith("(days)")
    plt.close(fig)
    assert png.stat().st_size > 10_000


def test_fault_typos_get_did_you_mean():
    """Issue 14: "did you mean" for units; a fault spec uses the same units module."""
    from pumprig.errors import PumprigError
    from pumprig.simulate import parse_fault

    with pytest.raises(PumprigError, match="unknown fault 'stal' \\(did you mean 'stall'\\?\\)"):
        parse_fault("stal@30d")
    with pytest.raises(PumprigError, match="did you mean 'd'"):
        parse_fault("stall@30dd")
    assert parse_fault("stall@1d 2h:1h30m") == {"kind": "stall", "at_s": 93_600, "for_s": 5400}


@needs_mpy
def test_a_battery_fault_with_a_duration_ends(capsys, home):
    """Found here: `--fault battery=3.2V@12h:1d` never ended (the world was told battery_mv=None,
    which means "no change"), so the run ended at 3.2 V."""
    rc, out, err = run(capsys, "simulate", P1, "--days", "3", "--fault", "battery=3.2V@12h:1d",
                       "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["per_day"][0]["battery_mv"] == 3200
    assert r["battery_mv"] > 3500 and r["faults"][0]["alarms"] == ["ERI"]


def test_bench_phases_draw_on_a_terminal_and_clear_before_an_error():
    """Issue 14: the bench drew its own bar with carriage returns into logs. Its phases now go
    through tqdm (pumprig.progress.Phases): drawn on a terminal, cleared on the way out even
    when the work fails, nothing at all off a terminal."""
    import io

    from pumprig.progress import Phases

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    with pytest.raises(RuntimeError):
        with Phases(stream=tty) as show:
            show("settle", 1, 4)
            show("run", 3, 10)
            raise RuntimeError("balance unplugged")
    text = tty.getvalue()
    assert "settle:" in text and "/4 " in text and "run:" in text and "/10 " in text
    assert text.endswith("\r") and text.rsplit("\r", 2)[-2].strip() == ""  # cleared at the end
    log = io.StringIO()
    with Phases(stream=log) as show:
        show("run", 5, 10)
    assert log.getvalue() == ""
