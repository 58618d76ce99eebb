"""Every `pumprig` command against the real firmware on a virtual rig, and the user mistakes
that must end in `pumprig: <message>` with a non-zero exit and no traceback.

The rig runs in real time unless a test needs to move time (warp); PUMPRIG_HOME is a temp
dir, so the CLI finds the keys the rig provisioned there and never the user's.
"""

import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import tty

import pytest

pytest.importorskip("serial")
from pumpcore import plan as core  # noqa: E402
from pumpcore import proto  # noqa: E402
from pumprig import cli  # noqa: E402
from pumprig import keys as keystore  # noqa: E402
from pumprig.client import Client  # noqa: E402
from pumprig.errors import PumprigError  # noqa: E402
from pumprig.plans import load_plan, parse_date  # noqa: E402
from pumprig.virtual.rig import open_rig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")

P1 = os.path.join(ROOT, "examples", "p1-baclofen-continuous.toml")
P5 = os.path.join(ROOT, "examples", "p5-morphine-patient.toml")
PUMPRIG = os.path.join(os.path.dirname(sys.executable), "pumprig")
T = ("--timeout", "0.5")  # the firmware answers in ~1 ms; keeps a resend cheap
STATUS_KEYS = {"firmware", "protocol", "board", "mode", "reservoir_ml", "battery_v",
               "battery_state", "alarms", "plan_crc"}  # fmt: skip


def _start(warp):
    return open_rig(warp=warp)


def _ready(r, home):
    for _ in range(300):
        try:
            Client(r.link, role=None, home=home, timeout=0.5).open().close()
            return r
        except PumprigError:
            time.sleep(0.01)
    raise AssertionError("the firmware did not answer")


@pytest.fixture
def rig(home):
    r = _start(warp=False)
    try:
        yield _ready(r, home)
    finally:
        r.stop()


@pytest.fixture
def warp_rig(home):
    r = _start(warp=True)
    try:
        yield _ready(r, home)
    finally:
        r.stop()


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def ok(capsys, rig, *argv):
    rc, out, err = run(capsys, "--port", rig.link, *T, *argv)
    assert rc == 0, err
    assert err == ""
    return out


def refused(capsys, port, *argv):
    rc, out, err = run(capsys, "--port", port, *T, *argv)
    assert rc == 1, (out, err)
    assert err.startswith("pumprig: ") and err.count("\n") == 1, err
    return err


def rig_crc(rig, home):
    """The plan CRC as the rig announces it in hello (no role, no login)."""
    with Client(rig.link, role=None, home=home, timeout=0.5) as c:
        return c.info["plan_crc"]


# --------------------------------------------------------------------------- must-show 1


def test_console_script_program_status_and_lockout(rig, home):
    """The installed `pumprig` command, as a user types it."""
    env = dict(os.environ)

    def sh(*argv):
        return subprocess.run([PUMPRIG, "--port", rig.link, *T, *argv], capture_output=True,
                              text=True, env=env, timeout=60)  # fmt: skip

    r = sh("program", P1, "--yes")
    assert r.returncode == 0, r.stderr
    want = core.crc(load_plan(P1))
    assert ("programmed: plan CRC %s" % want) in r.stdout
    r = sh("status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["plan_crc"] == want and st["mode"] == "continuous"
    assert STATUS_KEYS <= set(st)

    r = sh("refill", "--volume", "20 mL")
    assert r.returncode == 0, r.stderr
    r = sh("program", P5, "--yes")
    assert r.returncode == 0, r.stderr
    r = sh("bolus")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("pumprig: ") and "lockout" in r.stderr.lower(), r.stderr
    assert "LOCKOUT" in r.stderr
    assert rig.world.measure()["pulses_fwd"] == 0  # nothing was delivered for it


# --------------------------------------------------------------------------- must-show 5


def test_status_program_refill_and_read_commands(capsys, rig, home):
    st = json.loads(ok(capsys, rig, "status", "--json"))
    assert STATUS_KEYS <= set(st)
    assert st["plan_crc"] == "00000000" and st["mode"] == "none"
    assert isinstance(st["alarms"], list) and st["protocol"] == proto.PROTOCOL_VERSION
    assert st["battery_v"] == pytest.approx(st["battery_mv"] / 1000)

    out = ok(capsys, rig, "program", P1, "--yes")
    crc = core.crc(load_plan(P1))
    assert "programmed: plan CRC %s" % crc in out
    # programming the same plan again changes nothing and says so through the diff
    ok(capsys, rig, "program", P1, "--yes")
    st = json.loads(ok(capsys, rig, "status", "--json"))
    assert st["plan_crc"] == crc and st["mode"] == "continuous"
    assert sorted(st["alarms"]) == ["EMPTY", "LOW"]  # nothing in the reservoir yet
    assert st["reservoir_ml"] == 0

    res = json.loads(ok(capsys, rig, "refill", "--volume", "20 mL", "--refill-by", "2030-01-01",
                        "--json"))  # fmt: skip
    assert res["reservoir_nl"] == 20_000_000
    st = json.loads(ok(capsys, rig, "status", "--json"))
    assert 19.99 < st["reservoir_ml"] <= 20.0
    assert sorted(st["alarms"]) == ["EMPTY", "LOW"]  # latched until acknowledged
    assert st["refill_by_epoch_s"] == parse_date("2030-01-01")
    out = ok(capsys, rig, "refill", "--volume", "20 mL")
    assert "reservoir" in out and "20.000 mL" in out

    out = ok(capsys, rig, "status")
    assert "continuous, therapy running" in out and "0.200 mL/day" in out and crc in out

    alarms = json.loads(ok(capsys, rig, "alarms", "--json"))
    assert {a["kind"] for a in alarms} == {"EMPTY", "LOW"}  # latched, condition cleared
    assert all(set(a) >= {"kind", "critical", "active", "acked", "since_epoch_s"} for a in alarms)
    assert not any(a["active"] or a["acked"] for a in alarms)
    out = ok(capsys, rig, "alarms")
    assert "EMPTY" in out and "cleared" in out
    assert sorted(json.loads(ok(capsys, rig, "ack", "--json"))["acked"]) == ["EMPTY", "LOW"]
    assert json.loads(ok(capsys, rig, "status", "--json"))["alarms"] == []
    assert ok(capsys, rig, "alarms").strip() == "no alarms"

    out = ok(capsys, rig, "monitor", "--once")
    assert out.startswith("pumprig monitor") and "0.200 mL/day" in out and "recent events" in out


def test_alarms_ack_and_alarm_test(capsys, rig, home):
    ok(capsys, rig, "program", P1, "--yes")  # empty reservoir: EMPTY (critical) and LOW
    active = json.loads(ok(capsys, rig, "alarms", "--json"))
    assert {a["kind"] for a in active if a["active"] and not a["acked"]} == {"EMPTY", "LOW"}
    acked = json.loads(ok(capsys, rig, "ack", "LOW", "--json"))["acked"]
    assert acked == ["LOW"]
    out = ok(capsys, rig, "ack")
    assert out.startswith("acknowledged: ") and "EMPTY" in out
    assert all(a["acked"] for a in json.loads(ok(capsys, rig, "alarms", "--json")))
    err = refused(capsys, rig.link, "ack", "NOSUCH")
    assert "BAD_ARGS" in err

    rig.world.history()
    out = ok(capsys, rig, "alarm-test")
    assert "alarm test started" in out
    end = time.monotonic() + 5
    while time.monotonic() < end:  # the world hears the buzzer
        if any(h[1] for h in rig.world.history()[-50:]):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("no tone after alarm-test: %r" % rig.world.history()[-5:])


def test_log_in_every_format(capsys, rig, home):
    ok(capsys, rig, "program", P1, "--yes")
    ok(capsys, rig, "refill", "--volume", "20 mL")
    events = json.loads(ok(capsys, rig, "log", "--format", "json"))
    kinds = [e["kind"] for e in events]
    assert "plan.changed" in kinds and "refill" in kinds and kinds[0] == "reset"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # each command logs in, and the login is in the log (audit): later reads have more
    assert "auth.ok" in kinds and "cmd" in kinds
    n = len(events)
    assert json.loads(ok(capsys, rig, "log", "--json"))[:n] == events

    rows = list(csv.reader(io.StringIO(ok(capsys, rig, "log", "--format", "csv"))))
    assert rows[0] == ["seq", "epoch_s", "ms", "kind", "data"]
    assert [int(r[0]) for r in rows[1 : n + 1]] == seqs
    assert [r[3] for r in rows[1 : n + 1]] == kinds
    assert json.loads(rows[kinds.index("refill") + 1][4])["volume_nl"] == 20_000_000

    table = ok(capsys, rig, "log", "--format", "table").splitlines()
    assert table[0].split() == ["seq", "time", "ms", "kind", "data"]
    # three more logins since (--json, csv, table), within 10 min of the last one logged for
    # the role: counted in its next auth.ok, not logged each (pumpcore.session, AUDIT_OK_MS)
    assert len(table) == n + 1
    assert [line.split()[0] for line in table[1 : n + 1]] == [str(q) for q in seqs]
    assert any("plan.changed" in line and "e28a3d80" in line for line in table[1:])

    page = json.loads(ok(capsys, rig, "log", "--since", str(seqs[1]), "--limit", "2", "--json"))
    assert [e["seq"] for e in page] == seqs[1:3]


def test_clock_sync_and_show(capsys, rig, home):
    # a virtual rig has a battery-backed RTC: the pump boots with UTC, and no local offset
    shown = json.loads(ok(capsys, rig, "clock", "show", "--json"))
    assert shown["set"] is True and shown["offset_s"] == 0
    assert abs(shown["epoch_s"] - time.time()) < 30
    before = int(time.time())
    res = json.loads(ok(capsys, rig, "clock", "sync", "--tz", "Europe/Paris", "--json"))
    assert res["set"] is True and res["offset_s"] in (3600, 7200)
    shown = json.loads(ok(capsys, rig, "clock", "show", "--json"))
    assert shown["set"] is True and shown["offset_s"] == res["offset_s"]
    assert before - 1 <= shown["epoch_s"] <= int(time.time()) + 1
    out = ok(capsys, rig, "clock", "sync", "--tz", "UTC")
    assert "UTC offset  +0 s" in out
    err = refused(capsys, rig.link, "clock", "sync", "--tz", "Mars/Olympus")
    assert "unknown time zone" in err


def test_list_and_plan_check(capsys, rig, home):
    rigs = json.loads(ok(capsys, rig, "list", "--json"))
    mine = [r for r in rigs if r.get("port") == rig.link]
    assert len(mine) == 1 and mine[0]["kind"] == "virtual"
    uid = open(os.path.join(rig.state, "uid")).read().strip()
    assert mine[0]["uid"] == uid
    out = ok(capsys, rig, "list")
    assert rig.link in out and uid in out

    doc = json.loads(ok(capsys, rig, "plan", "check", P1, "--fill", "20 mL", "--json"))
    assert doc["summary"]["plan_crc"] == core.crc(load_plan(P1)) == doc["summary"]["plan_crc"]
    assert doc["plan"] == load_plan(P1)
    out = ok(capsys, rig, "plan", "check", P5)
    assert "plan CRC" in out


def test_bolus_when_allowed(capsys, warp_rig, home):
    rig = warp_rig
    ok(capsys, rig, "refill", "--volume", "20 mL")
    ok(capsys, rig, "program", P5, "--yes")
    t0 = rig.world.measure()["time_ms"]
    refused(capsys, rig.link, "bolus")  # lockout from programming
    rig.world.advance(to_ms=t0 + 2 * 3600_000 + 1000)
    res = json.loads(ok(capsys, rig, "bolus", "--json"))
    started = res.pop("started_epoch_s")  # the rig's RTC time of the bolus
    assert res == {"dose_ng": 100_000, "volume_nl": 10_000, "dur_s": 600}
    assert started == rig.world.measure()["epoch_s"]
    err = refused(capsys, rig.link, "bolus")
    assert "LOCKOUT" in err and "lockout for 120 more min" in err
    st = json.loads(ok(capsys, rig, "status", "--json"))
    assert st["boluses_24h"] == 1


# --------------------------------------------------------------------------- mistakes


def test_no_such_port(capsys, home, tmp_path):
    err = refused(capsys, str(tmp_path / "ttyACM7"), "status")
    assert "no such port" in err and "pumprig list" in err


def test_wrong_key_leaves_the_plan_alone(capsys, warp_rig, home, tmp_path):
    rig = warp_rig
    ok(capsys, rig, "refill", "--volume", "20 mL")
    ok(capsys, rig, "program", P1, "--yes")
    crc = core.crc(load_plan(P1))
    half = tmp_path / "half.toml"
    half.write_text(open(P1).read().replace('dose = "400 mcg/day"', 'dose = "200 mcg/day"'))
    assert core.crc(load_plan(str(half))) != crc

    ks = keystore.KeyStore(home)
    uid, good = next(iter(ks.load().items()))
    ks.save(uid, {"patient": good["patient"], "clinician": "5a" * 32})
    err = refused(capsys, rig.link, "program", str(half), "--yes")
    assert "AUTH_FAILED" in err and "5a" * 32 not in err
    assert rig_crc(rig, home) == crc

    # the patient key (right key, too low a role)
    ks.save(uid, good)
    rig.world.advance(by_ms=1100)  # the rig throttles logins for 1 s after a failure
    err = refused(capsys, rig.link, "--role", "patient", "program", str(half), "--yes")
    assert "FORBIDDEN" in err
    assert rig_crc(rig, home) == crc

    # a key store entry that is not a key at all, and a key store that is not JSON
    entries = ks.load()
    entries[uid] = {"patient": good["patient"], "clinician": "not a key"}
    ks.path.write_text(json.dumps(entries))
    err = refused(capsys, rig.link, "program", str(half), "--yes")
    assert "not a key" not in err
    ks.path.write_text("{ this is not json")
    err = refused(capsys, rig.link, "status")
    assert "key store" in err
    ks.path.write_text(json.dumps({}))
    err = refused(capsys, rig.link, "status")
    assert uid in err
    assert rig_crc(rig, home) == crc
    ks.save(uid, good)
    st = json.loads(ok(capsys, rig, "status", "--json"))
    assert st["plan_crc"] == crc and st["rate_nl_day"] == 200_000


def test_invalid_plan_is_refused_before_the_rig(capsys, rig, home, tmp_path):
    ok(capsys, rig, "program", P1, "--yes")
    crc = core.crc(load_plan(P1))
    text = open(P1).read()
    bad = {
        "caps.toml": text + '\n[caps]\nper_day = "100 mcg"\n',  # basal over its own cap
        "levels.toml": text.replace('low = "2.0 mL"', 'low = "0.5 mL"'),  # LOW below EMPTY
        "absurd.toml": text.replace('"400 mcg/day"', '"20000 mg/day"')  # above any dose bound
        + '\n[caps]\nper_day = "30000 mg"\nper_hour = "1000 mg"\n',
        "syntax.toml": "title = \n",
        "units.toml": text.replace("400 mcg/day", "400 furlongs"),
    }
    for name, body in bad.items():
        p = tmp_path / name
        p.write_text(body)
        err = refused(capsys, rig.link, "program", str(p), "--yes")
        assert len(err) < 400, err
        assert rig_crc(rig, home) == crc, name
    err = refused(capsys, rig.link, "program", str(tmp_path / "missing.toml"), "--yes")
    assert "no such plan file" in err
    rc, out, err = run(capsys, "plan", "check", str(tmp_path / "caps.toml"))
    assert rc == 1


class _FakeRig:
    """A pty that answers every request with a hello from another protocol version."""

    def __init__(self, version):
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.version = version
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self):
        buf = b""
        while not self._stop:
            if not select.select([self.master], [], [], 0.02)[0]:
                continue
            try:
                buf += os.read(self.master, 4096)
            except OSError:
                return
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                f = proto.decode(line + b"\n")
                if f.error is None and f.kind == proto.REQUEST:
                    os.write(self.master, proto.encode_ok(f.id, {
                        "board": "sim", "firmware": "9.0.0", "protocol": self.version,
                        "nonce": "00" * 16, "plan_crc": "00000000", "step_pl": 250000,
                        "uid": "e6614103e7452d2f", "limits": {"max_id": 24, "max_line": 1024}}))

    def close(self):
        self._stop = True
        self._t.join(1)
        os.close(self.master)
        os.close(self._slave)


def test_firmware_version_mismatch(capsys, home):
    fake = _FakeRig(1)  # firmware from before signed requests
    try:
        err = refused(capsys, fake.path, "status")
        assert "protocol 1" in err and "pumprig flash" in err
        err = refused(capsys, fake.path, "program", P1, "--yes")
        assert "protocol 1" in err
    finally:
        fake.close()


def test_timeout_on_a_port_nobody_serves(capsys, home):
    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        rc, out, err = run(capsys, "--port", os.ttyname(slave), "--timeout", "0.2", "status")
        assert rc == 1 and err.startswith("pumprig: no answer to hello"), err
        assert "firmware running" in err and "3 tries" in err
        sent = os.read(master, 4096).splitlines()
        assert len(sent) == 3 and len(set(sent)) == 1  # the same hello, resent with its id
        assert proto.decode(sent[0] + b"\n").name == "hello"
    finally:
        os.close(master)
        os.close(slave)


def test_a_board_left_at_the_repl_is_named_as_such(capsys, rig, home):
    """mpremote leaves a board at the MicroPython REPL (as on a Pico): the CLI says so and how
    to get the firmware running again, instead of a bare timeout."""
    import subprocess

    out = subprocess.run([sys.executable, "-m", "mpremote", "connect", rig.link, "exec",
                          "print(1 + 1)"], capture_output=True, text=True, timeout=30).stdout
    assert out.strip() == "2"
    err = refused(capsys, rig.link, "status")
    assert "at the MicroPython REPL" in err and "mpremote connect %s reset" % rig.link in err
    subprocess.run([sys.executable, "-m", "mpremote", "connect", rig.link, "reset"],
                   capture_output=True, timeout=30)
    from pumprig.flash import wait_up

    wait_up(rig.link)
    assert json.loads(ok(capsys, rig, "status", "--json"))["firmware"]
