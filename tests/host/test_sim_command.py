"""`pumprig sim` in the first hour (issue 14): a user's mistake is one `pumprig:` line and a
non-zero exit, before anything is written; SIGTERM stops the rig as Ctrl-C does; a rig never
outlives the process that started it; `mpremote fs ls` shows the sizes of the rig's files."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from pumprig import cli

HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
needs_mpy = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
PUMPRIG = os.path.join(os.path.dirname(sys.executable), "pumprig")


def until(pred, what, timeout_s=30.0):
    end = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < end, what
        time.sleep(0.02)


def alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sim(capsys, *args):
    rc = cli.main(["sim", *args])
    err = capsys.readouterr().err
    return rc, err


def nothing_written(home):
    return not os.path.exists(os.path.join(home, "keys.json")) and \
        not os.path.exists(os.path.join(home, "state"))


def test_link_in_a_missing_folder_is_one_line(home, tmp_path, capsys):
    """Finding (issue 14): `sim --link` in a folder that does not exist gave a traceback."""
    rc, err = sim(capsys, "--link", str(tmp_path / "nope" / "rig"))
    assert rc == 1
    assert err.startswith("pumprig: ") and "no folder" in err and str(tmp_path / "nope") in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert nothing_written(str(home))


def test_link_onto_a_regular_file_is_refused_and_the_file_kept(home, tmp_path, capsys):
    """Finding (issue 14): `sim --link` onto an existing regular file replaced it, and removed
    it on exit."""
    f = tmp_path / "notes.txt"
    f.write_text("my notes\n")
    rc, err = sim(capsys, "--link", str(f))
    assert rc == 1 and err.startswith("pumprig: ") and "not a port link" in err
    assert f.read_text() == "my notes\n" and not f.is_symlink()
    assert nothing_written(str(home))


@pytest.mark.parametrize("heap", ["banana", "12", "2g", "5x", "0k"])
def test_a_heap_that_is_no_size_is_one_line(home, tmp_path, capsys, heap):
    """Finding (issue 14): `sim --heap banana` looped on "interpreter keeps exiting"."""
    rc, err = sim(capsys, "--link", str(tmp_path / "rig"), "--heap", heap)
    assert rc == 1 and err.startswith("pumprig: --heap ") and "Traceback" not in err
    assert not os.path.lexists(tmp_path / "rig")
    assert nothing_written(str(home))


def test_without_the_unix_port_a_message_and_no_keys(home, tmp_path, capsys, monkeypatch):
    """Finding (issue 14): without the MicroPython unix port `pumprig sim` exited 2 with the
    message lost, after writing keys."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rc, err = sim(capsys, "--link", str(tmp_path / "rig"))
    assert rc == 1
    assert err.startswith("pumprig: the MicroPython unix port is not installed")
    assert nothing_written(str(home)) and not os.path.lexists(tmp_path / "rig")


@needs_mpy
def test_sigterm_stops_the_launcher_and_the_interpreter(home, tmp_path):
    """Finding (issue 14): SIGTERM must end `pumprig sim` as Ctrl-C does: the interpreter
    stopped, the port link, control socket and registry entry removed."""
    from pumprig.virtual.control import WorldClient

    link = tmp_path / "rig"
    state = tmp_path / "state"
    p = subprocess.Popen([PUMPRIG, "sim", "--link", str(link), "--state", str(state)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PUMPRIG_HOME=str(home)))
    try:
        ctl = str(state / "control.sock")
        until(lambda: os.path.lexists(link) and os.path.exists(ctl), "the rig came up")
        with WorldClient(ctl) as w:
            interp = until(lambda: w.status()["pid"], "the interpreter runs")
        assert alive(interp)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        until(lambda: not alive(interp), "the interpreter stopped")
        assert not os.path.lexists(link) and not os.path.exists(ctl)
        assert not list((home / "rigs").glob("*.json"))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


OWNER = """
import sys, time
from pumprig.virtual.rig import VirtualRig
rig = VirtualRig(blank=True).start()
print(rig.proc.pid, rig.world.status()["pid"], flush=True)
time.sleep(600)
"""


@needs_mpy
def test_a_rig_does_not_outlive_its_owner(home, tmp_path):
    """Finding (issue 14): SIGTERM to a program that started a virtual rig (`pumprig
    simulate`, `bench --port sim`) left the launcher and the interpreter running. The
    launcher now stops when its owner has gone, however it ended."""
    p = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PUMPRIG_HOME=str(home)))
    launcher = interp = None
    try:
        launcher, interp = (int(x) for x in p.stdout.readline().split())
        assert alive(launcher) and alive(interp)
        p.send_signal(signal.SIGTERM)     # the default action: no finally, no atexit
        p.wait(30)
        until(lambda: not alive(launcher), "the launcher stopped")
        until(lambda: not alive(interp), "the interpreter stopped")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for pid in (launcher, interp):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


@needs_mpy
def test_mpremote_fs_ls_shows_file_sizes(home, tmp_path):
    """Finding (issue 14): `mpremote fs ls` showed size 0 for every file on the virtual rig
    (the unix port lists no size)."""
    from pumprig.virtual.rig import VirtualRig

    with VirtualRig(blank=True) as rig:
        with open(os.path.join(rig.fs, "hello.py"), "w") as f:
            f.write("GREETING = 'hi'\n" * 3)
        keys = os.path.getsize(os.path.join(rig.fs, "data", "keys.json"))
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", rig.link, "fs", "ls",
                            "+", "fs", "ls", ":data", "+", "exec",
                            "import os, json; print(json.dumps(list(os.ilistdir('/'))))"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = [x.split() for x in r.stdout.splitlines()]
        assert ["48", "hello.py"] in lines
        assert [str(keys), "keys.json"] in lines
        assert ["0", "data/"] in lines          # directories: 0, as a board's littlefs
        listing = {e[0]: e for e in json.loads(r.stdout.strip().splitlines()[-1])}
        assert listing["hello.py"][3] == 48 and listing["data"][3] == 0
