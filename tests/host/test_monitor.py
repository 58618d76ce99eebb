"""`pumprig monitor` (issue 14, first hour): it held the port alone (a second `status` got
"port busy"), showed no recent events although the log had them, and no time of the last
update."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from pumprig.client import Client
from pumprig.errors import PumprigError
from pumprig.monitor import Monitor, log_end, read_new

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PUMPRIG = os.path.join(os.path.dirname(sys.executable), "pumprig")
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
P1 = os.path.join(ROOT, "examples", "p1-baclofen-continuous.toml")


class FakeLog:
    """A client whose log holds `seqs` (rotated logs start late; seqs may have gaps), paged
    like the firmware's: events with seq >= since, at most `limit`."""

    def __init__(self, seqs):
        self.seqs = sorted(seqs)
        self.calls = 0

    def log(self, since=None, limit=None):
        self.calls += 1
        since = since or 0
        evs = [{"seq": s, "epoch_s": 1_800_000_000 + s, "kind": "k%d" % s, "data": {}}
               for s in self.seqs if s >= since][:limit or 20]
        return {"events": evs, "next": evs[-1]["seq"] + 1 if evs else since}


@pytest.mark.parametrize("seqs", [[], [0], [0, 1, 2], list(range(100, 230)),
                                  list(range(0, 100_000, 3)), [5, 900, 901, 70_000]])
def test_log_end_finds_the_last_event_in_few_requests(seqs):
    c = FakeLog(seqs)
    assert log_end(c) == (seqs[-1] + 1 if seqs else 0)
    assert c.calls <= 2 * 17 + 2           # exponential + binary search: ~2 log2(n)


def _conn(log, status):
    """A connection factory as Monitor takes it: a context manager with status() and log()."""

    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def status(self):
            return status()

        def log(self, since=None, limit=None):
            return log.log(since, limit)

    return Conn


def test_first_view_shows_the_last_events_already_in_the_log_then_new_ones():
    log = FakeLog(range(0, 40))
    mon = Monitor(_conn(log, lambda: {"mode": "continuous"}), recent=5)
    assert mon.update()
    assert [e["seq"] for e in mon.events] == [35, 36, 37, 38, 39]
    log.seqs += [40, 41]
    assert mon.update()
    assert [e["seq"] for e in mon.events] == [37, 38, 39, 40, 41]
    text = "\n".join(mon.lines(lambda st: [("a", 1), ("b", 2), ("mode", st["mode"])]))
    assert "#41" in text and "k41" in text and "last update: 20" in text
    assert read_new(log, 42) == ([], 42)


def test_an_update_asks_log_only_when_status_says_an_event_was_logged():
    """`status` carries `log_next` (the seq the next event gets): a poll of a rig that logged
    nothing costs one request, and a restart's skipped seqs are not asked for again."""
    log = FakeLog(range(0, 10))
    nxt = [10]
    mon = Monitor(_conn(log, lambda: {"mode": "continuous", "log_next": nxt[0]}), recent=3)
    assert mon.update()
    assert [e["seq"] for e in mon.events] == [7, 8, 9]
    calls = log.calls
    for _ in range(5):
        assert mon.update()
    assert log.calls == calls                 # nothing new: no `log` request
    log.seqs += [10]
    nxt[0] = 11
    assert mon.update()
    assert [e["seq"] for e in mon.events] == [8, 9, 10]
    # a restart reserved seqs 11..49: the next event is 50
    nxt[0] = 50
    assert mon.update()
    assert mon.since == 50
    calls = log.calls
    assert mon.update()
    assert log.calls == calls
    log.seqs += [50]
    nxt[0] = 51
    assert mon.update()
    assert [e["seq"] for e in mon.events] == [9, 10, 50]


def test_a_failed_update_keeps_the_view_and_says_why():
    def busy():
        raise PumprigError("port /dev/x is busy")

    mon = Monitor(busy)
    assert not mon.update()
    text = "\n".join(mon.lines(lambda st: []))
    assert "last update: never" in text and "busy" in text


# --------------------------------------------------------------------------- on a virtual rig

def _read_until(proc, text, timeout_s=60.0):
    """Read the monitor's output until `text` appears (a condition, generous deadline)."""
    buf = b""
    end = time.monotonic() + timeout_s
    while text.encode() not in buf:
        left = end - time.monotonic()
        assert left > 0, "monitor never printed %r; got %r" % (text, buf[-2000:])
        r, _, _ = select.select([proc.stdout], [], [], left)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, "monitor exited: %r" % buf[-2000:]
            buf += chunk
    return buf.decode(errors="replace")


@pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
def test_status_works_while_monitor_runs_and_monitor_shows_log_and_update_time(home):
    from pumprig.virtual.rig import open_rig

    rig = open_rig(warp=False)
    mon = None
    try:
        for _ in range(500):
            try:
                Client(rig.link, role=None, home=str(home), timeout=0.5).open().close()
                break
            except PumprigError:
                time.sleep(0.02)
        env = dict(os.environ)
        base = [PUMPRIG, "--port", rig.link, "--timeout", "2"]
        r = subprocess.run(base + ["program", P1, "--yes"], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, r.stderr       # the log now has plan and refill events
        mon = subprocess.Popen(base + ["monitor", "--interval", "0.3"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        first = _read_until(mon, "last update: 20")
        recent = first.split("recent events:", 1)[1]
        assert recent.count("  #") >= 3, first  # events already in the log, at start
        for _ in range(3):
            r = subprocess.run(base + ["status", "--json"], capture_output=True, text=True,
                               env=env, timeout=60)
            assert r.returncode == 0, r.stderr    # was: "port ... is busy"
        again = _read_until(mon, "last update: 20")
        assert "update failed" not in again.rsplit("pumprig monitor", 1)[-1]
        assert mon.poll() is None                 # still running
    finally:
        if mon is not None:
            mon.send_signal(signal.SIGINT)
            try:
                mon.wait(30)
            except subprocess.TimeoutExpired:
                mon.kill()
                mon.wait()
        rig.stop()
