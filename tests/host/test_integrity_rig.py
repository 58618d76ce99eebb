"""Integrity at boot (issue 12, finding 5): a torn or missing module never hangs the board.

The firmware is flashed with `pumprig flash` onto a virtual rig, then a module is truncated on
the rig's filesystem (its state dir), as a cut during a copy leaves it. Before the boot check a
torn app.mpy made the import spin at 100 % CPU before the watchdog was armed (hung forever), a
torn program.mpy gave a watchdog boot loop, a torn clinician.mpy hung every clinician command. Now
main.py's boot check (board/bootcheck.py) finds the file that does not match the manifest and
holds the FIRMWARE safe state: motor disabled, `hello` and `status` answered (bounded wait) with
the FIRMWARE alarm, an alarm.raised event in the log; `pumprig flash` (which enters the raw
REPL from there with Ctrl-C) repairs it.
"""

import json
import os
import sys

import pytest

pytest.importorskip("serial")

HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")


@pytest.fixture
def rig(tmp_path, monkeypatch):
    from pumprig.flash import flash
    from pumprig.virtual.rig import VirtualRig

    monkeypatch.setenv("PUMPRIG_HOME", str(tmp_path / "home"))
    with VirtualRig(blank=True) as r:
        flash(r.link)
        yield r


def hello(rig, timeout=2.0):
    """(hello, status) of the rig within a bounded wait (RigTimeout if it hangs); status
    without a login in the safe state, as a patient otherwise."""
    from pumprig.client import Client

    with Client(rig.link, role=None, timeout=timeout) as c:
        info = c.info
        if info["firmware"] == "safe":
            return info, c.status()
    with Client(rig.link, role="patient", timeout=timeout) as c:
        return info, c.status()


def tear(rig, remote, keep=0.5):
    path = os.path.join(rig.fs, remote)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


@pytest.mark.parametrize("module", ["pumpcore/app.mpy", "pumpcore/program.mpy",
                                    "pumpcore/clinician.mpy"])
def test_a_torn_module_gives_the_firmware_safe_state_and_flash_repairs_it(rig, module, capsys):
    from pumprig.client import Client
    from pumprig.errors import DeviceError
    from pumprig.flash import flash

    info, st = hello(rig)
    assert info["firmware"] != "safe" and "FIRMWARE" not in st["alarms"]
    tear(rig, module)
    rig.world.reset()
    info, st = hello(rig)
    assert info["firmware"] == "safe" and info["alarms"] == ["FIRMWARE"]
    assert st["therapy"] == "safe" and st["safe_reason"] == "FIRMWARE"
    assert st["bad"] == [module]
    assert st["logged"] is True            # the log's modules were intact: event written
    m = rig.world.measure()
    assert not m["enabled"] and not m["motor_busy"]
    # the CLI shows it without a login; with one, a clear refusal
    from pumprig import cli

    assert cli.main(["--port", rig.link, "--role", "none", "status"]) == 0
    out = capsys.readouterr().out
    assert "FIRMWARE" in out and "firmware check  FAILED: %s" % module in out
    assert cli.main(["--port", rig.link, "status"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pumprig: firmware check failed (%s)" % module)
    # a login is refused with a clear reason, nothing else runs
    with pytest.raises(DeviceError) as e:
        Client(rig.link, role="clinician", timeout=2.0).open()
    assert e.value.code == "SAFE_STATE" and module in str(e.value)

    rep = flash(rig.link)                  # Ctrl-C into the raw REPL from the safe state
    assert module in rep["copied"]
    with Client(rig.link, role="clinician", timeout=2.0) as c:
        st = c.status()
        assert st["firmware"] != "safe" and "FIRMWARE" not in st["alarms"]
        events = c.log_all()
    fw = [e for e in events if e["kind"] == "alarm.raised" and e["data"]["kind"] == "FIRMWARE"]
    assert fw and fw[-1]["data"]["files"] == [module]


def test_a_missing_manifest_or_a_torn_config_is_the_safe_state_too(rig):
    from pumprig.flash import MANIFEST, flash

    os.remove(os.path.join(rig.fs, MANIFEST))
    rig.world.reset()
    info, st = hello(rig)
    assert st["bad"] == [MANIFEST] and st["logged"] is False and info["alarms"] == ["FIRMWARE"]
    assert not rig.world.measure()["enabled"]
    flash(rig.link)
    info, _ = hello(rig)
    assert info["firmware"] != "safe"

    # the board's json torn: the pins are unknown, still no hang and no motor
    tear(rig, "boards/sim.json", 0.3)
    rig.world.reset()
    info, st = hello(rig)
    assert st["bad"] == ["boards/sim.json"] and st["motor"] is False
    assert not rig.world.measure()["enabled"]
    flash(rig.link)
    info, _ = hello(rig)
    assert info["firmware"] != "safe"


def test_the_manifest_lists_every_flashed_file_with_size_and_hash(rig):
    import hashlib

    from pumprig.flash import MANIFEST

    with open(os.path.join(rig.fs, MANIFEST)) as f:
        files = json.load(f)["files"]
    assert {"main.py", "bootcheck.py", "pumpcore/app.mpy", "hw/sim.mpy"} <= set(files)
    for p, (size, digest) in files.items():
        data = open(os.path.join(rig.fs, p), "rb").read()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == digest, p
