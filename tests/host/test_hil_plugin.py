"""The HIL pytest plugin as a lab uses it: installed (pytest11 entry point), options in the lab's
own ini file, a time limit per rig test, the pytest-html report with an environment section.

Each test writes a small "lab repository" in a temporary folder and runs pytest there in a
subprocess: no conftest of this project and no sys.path edit is involved. A stub rig stands in
for `hil_rig` (conftest override), so nothing here starts a virtual rig.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STUB_CONFTEST = '''
import types
import pytest
from pumprig_hil import plugin
from pumprig_hil.instruments import InstrumentError

class Client:
    info = {"uid": "e6614103e7452d2f", "board": "rp2040", "firmware": "9.9.9-test"}
    def therapy_stop(self): pass
    def __getattr__(self, name):
        raise AssertionError("the test reached the pump: " + name)

class Inst:
    def __init__(self, features): self.features = set(features)
    def has(self, f): return f in self.features
    def clear_faults(self): pass
    def now_s(self): return 0.0
    def steps(self):
        if "steps" not in self.features:
            raise InstrumentError("this rig has no steps (a STEP/DIR counter on the adapter)")
        return types.SimpleNamespace(fwd=0, rev=0)

class StubRig:
    target = "bench"
    def __init__(self, features):
        self.spec = types.SimpleNamespace(name="bench-1", is_sim=False)
        self.inst = Inst(features)
        self.client = Client()
        self.trace, self.band, self.clock = [], [], None
    def connect(self, **kw): pass
    def normalize(self): self.trace, self.band = [], []
    def fresh(self): self.normalize()
    def set_clock(self, *a): self.clock = (0, a[0])
    def sample(self, label=None):
        s = self.inst.steps()
        self.trace.append((self.inst.now_s(), s.fwd, label))
        return s
    def event_log_text(self): return "(stub log)"
    def readings_text(self): return "(stub readings)"

@pytest.fixture(scope="session")
def hil_rig(pytestconfig):
    hr = StubRig(FEATURES)
    plugin._publish_rig(pytestconfig, hr)
    print("RIG OPTION", plugin.option(pytestconfig, "rig"))
    yield hr
'''


def _lab(tmp_path, features, ini, tests):
    (tmp_path / "conftest.py").write_text("FEATURES = %r\n" % (features,) + STUB_CONFTEST)
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n" + ini)
    for name, text in tests.items():
        (tmp_path / name).write_text(text)


def _pytest(tmp_path, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "-rs", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def _png_size(path):
    b = Path(path).read_bytes()
    return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")


LAB_TESTS = '''
import time
import pytest

def test_delivers(rig):
    rig.trace += [(0.0, 0, "start"), (10.0, 6, None), (20.0, 11, None)]
    rig.band += [(10.0, 5.0, 1.5), (20.0, 10.0, 1.5)]
    assert rig.client.info["board"] == "rp2040"

def test_hangs(rig):
    time.sleep(120)

def test_without_rig():
    time.sleep(0.1)
'''


def test_lab_repository_gets_ini_options_time_limit_and_html_report(tmp_path):
    """Issue 14 (install): the plugin was loaded by a sys.path edit in hil/conftest.py, had no
    ini options, no time limit, and its report had no environment section (rig uid, board,
    firmware, package version)."""
    _lab(tmp_path, ["steps"], 'rig = "bench-1"\nhil_report = "report"\nrig_timeout = "10"\n',
         {"test_lab.py": LAB_TESTS})
    r = _pytest(tmp_path, "-s")
    out = r.stdout + r.stderr
    assert "RIG OPTION bench-1" in out                     # ini `rig` reached the fixture
    assert "pumprig HIL: --rig bench-1" in out
    assert "1 failed, 2 passed" in out, out[-3000:]
    assert "Timeout" in out                                # test_hangs stopped by the limit
    page = (tmp_path / "report" / "index.html").read_text()
    for text in ("e6614103e7452d2f", "rp2040", "9.9.9-test", "Rig uid", "Firmware"):
        assert text in page, text
    from importlib.metadata import version

    assert version("pumprig") in page
    plots = list((tmp_path / "report" / "plots").glob("*test_delivers*.png"))
    assert len(plots) == 1 and "plots/" + plots[0].name in page
    assert _png_size(plots[0]) == (960, 720)   # 150 dpi, steps and error panels (a band)


def test_command_line_wins_over_ini_and_timeout_can_be_off(tmp_path):
    """The command-line flag overrides the ini option; --rig-timeout 0 sets no limit, and a
    test that uses no rig never gets one."""
    _lab(tmp_path, ["steps"], 'rig = "bench-1"\nrig_timeout = "0.5"\n',
         {"test_lab.py": "import time\n\ndef test_slow(rig):\n    time.sleep(1.5)\n"})
    r = _pytest(tmp_path, "-s", "--rig", "sim-x", "--rig-timeout", "0")
    out = r.stdout + r.stderr
    assert "RIG OPTION sim-x" in out and "1 passed" in out, out[-3000:]


def test_protocol_suite_on_a_bench_without_instruments_skips_cleanly(tmp_path):
    """Issue 14 (first hour): `pytest hil --rig PORT` on a bench with a board and no
    instruments gave 9 errors: the protocol suite's `running` fixture starts a plan, which
    reads the step counter, and nothing marked it so. Now those tests skip, naming the
    missing instrument, and no test errors. (The stub board here answers no protocol, so the
    conformance tests that need only the serial line fail against it: they are not counted.)
    The lab copies the test file alone: its plans and the documented CRC rule come from the
    installed plugin (pumprig_hil.plans, pumprig_hil.plan_crc)."""
    shutil.copy(ROOT / "hil" / "test_hil_protocol.py", tmp_path / "test_hil_protocol.py")
    _lab(tmp_path, [], 'rig = "bench-1"\n', {})
    r = _pytest(tmp_path, "test_hil_protocol.py")
    out = r.stdout + r.stderr
    summary = out.strip().splitlines()[-1]
    assert not re.search(r"\d+ errors?\b", summary), out[-3000:]
    skipped = re.search(r"(\d+) skipped", summary)
    assert skipped and int(skipped.group(1)) >= 9, out[-3000:]
    assert "rig bench-1 has no steps" in out
