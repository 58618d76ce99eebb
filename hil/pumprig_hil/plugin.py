"""pytest plugin for the pumprig HIL suites (loaded by hil/conftest.py).

Options (group "pumprig HIL"): --rig, --rigs-file, --rig-lock-dir, --rig-wait, --hil-report.
Fixtures: `hil_rig` (session: this worker's rig), `rig` (per test: known state, teardown that
always stops the motor, skips for missing instruments).
Markers: needs_steps, needs_balance, needs_power_relay, needs_battery_dac, needs_battery_adc,
needs_stall_injection, needs_occlusion_injection, needs_time_warp(why), fresh_rig.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from . import inventory as inv
from .report import HtmlReport, plot_trace

HIL_DIR = Path(__file__).resolve().parents[1]

MARKERS = {
    "needs_steps": "the rig counts STEP/DIR pulses (instrument 'steps')",
    "needs_balance": "a laboratory balance weighs the output (instrument 'balance')",
    "needs_power_relay": "a relay can cut the board's power (instrument 'power_relay')",
    "needs_battery_dac": "a DAC forces the battery line (instrument 'battery_dac')",
    "needs_battery_adc": "an ADC reads the battery line (instrument 'battery_adc')",
    "needs_stall_injection": "the driver's DIAG line can be forced (instrument 'stall_injection')",
    "needs_occlusion_injection": "the line can be occluded (instrument 'occlusion_injection')",
    "needs_time_warp": "needs_time_warp(why): simulated time far beyond real time; skipped on "
                       "benches, which run in real time",
    "fresh_rig": "start from pristine records (no plan, counters, alarm or bolus history)",
}
_FEATURE_OF = {m: m[len("needs_"):] for m in MARKERS if m.startswith("needs_")}

RIG_KEY = pytest.StashKey()       # item -> HilRig in use
TRACE_DONE = pytest.StashKey()


def pytest_addoption(parser):
    g = parser.getgroup("pumprig HIL", "hardware-in-the-loop rigs")
    g.addoption("--rig", default=os.environ.get("PUMPRIG_RIG") or "sim", metavar="RIG",
                help="sim (virtual rigs, the default), all (any rig of the inventory), a rig "
                     "name from --rigs-file, a port or pyserial URL, or a USB serial number. "
                     "With -n N each worker takes its own rig.")
    g.addoption("--rigs-file", default=str(HIL_DIR / "rigs.toml"), metavar="TOML",
                help="rig inventory (default hil/rigs.toml)")
    g.addoption("--rig-lock-dir", default=None, metavar="DIR",
                help="where rig lock files live (default $PUMPRIG_HOME/locks, else /tmp)")
    g.addoption("--rig-wait", type=float, default=0.0, metavar="S",
                help="wait up to S seconds for a free rig (default 0: fail at once)")
    g.addoption("--hil-report", default=None, metavar="DIR",
                help="write DIR/index.html: per-test status, duration, event log, instrument "
                     "readings and step plots")


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", "%s: %s" % (name, text))
    rep = config.getoption("--hil-report")
    if rep and not hasattr(config, "workerinput"):
        config.stash[_HTML] = HtmlReport(Path(rep))


_HTML = pytest.StashKey()


def _worker(config):
    wi = getattr(config, "workerinput", None)
    return wi["workerid"] if wi else "main"


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def hil_rig(pytestconfig, tmp_path_factory):
    """This worker's rig, for the whole session (one per pytest-xdist worker)."""
    from .rig import HilRig

    opt = pytestconfig.getoption("--rig")
    worker = _worker(pytestconfig)
    old_home = os.environ.get("PUMPRIG_HOME")
    home = None
    lock = None
    if opt == "sim":
        # a throwaway key store per worker: tests never touch the user's keys
        home = tempfile.mkdtemp(prefix="pumprig-hil-%s-" % worker)
        os.environ["PUMPRIG_HOME"] = home
        spec = inv.sim_spec(worker)
    else:
        try:
            if opt.startswith("lg:"):  # labgrid places, one per worker (pumprig_hil/farm.py)
                from .farm import take_place

                lock = take_place(opt, worker, pytestconfig.getoption("--rig-wait"))
            else:
                specs = inv.candidates(opt, inv.load(pytestconfig.getoption("--rigs-file")))
                lock = inv.allocate(specs, inv.lock_dir(pytestconfig.getoption("--rig-lock-dir")),
                                    pytestconfig.getoption("--rig-wait"), owner=worker)
        except inv.InventoryError as e:
            raise pytest.UsageError(str(e)) from None
        spec = lock.spec
    hr = None
    try:
        hr = lock.start(home) if hasattr(lock, "start") else HilRig.start(spec, home)
        yield hr
    finally:
        if hr is not None:
            with contextlib.suppress(Exception):
                _safe_stop(hr)
            hr.close()
        if lock is not None:
            lock.release()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
            if old_home is None:
                os.environ.pop("PUMPRIG_HOME", None)
            else:
                os.environ["PUMPRIG_HOME"] = old_home


def _skip_reason(item, hr):
    for m in item.iter_markers():
        feat = _FEATURE_OF.get(m.name)
        if feat is None or hr.inst.has(feat):
            continue
        if feat == "time_warp":
            why = m.args[0] if m.args else m.kwargs.get("why", "this test")
            return ("needs time warp: %s; rig %s runs in real time (a bench cannot speed up "
                    "its clock): run it with --rig sim" % (why, hr.spec.name))
        return ("rig %s has no %s: %s (add it to the rig's instruments in rigs.toml once wired)"
                % (hr.spec.name, feat, MARKERS[m.name]))
    return None


def _safe_stop(hr):
    """Whatever happened: power on, faults off, motor stopped through the protocol."""
    try:
        hr.inst.clear_faults()
    finally:
        hr.connect(wait_s=10 if hr.spec.is_sim else 20, role="clinician")
        hr.client.therapy_stop()


@pytest.fixture
def rig(hil_rig, request):
    """The worker's rig in a known state; the teardown always stops the motor."""
    item = request.node
    why = _skip_reason(item, hil_rig)
    if why:
        pytest.skip(why)
    item.stash[RIG_KEY] = hil_rig
    if item.get_closest_marker("fresh_rig"):
        hil_rig.fresh()
    else:
        hil_rig.normalize()
    try:
        yield hil_rig
    finally:
        try:
            _safe_stop(hil_rig)
        finally:
            _save_plot(item, hil_rig)


def _save_plot(item, hr):
    out = item.config.getoption("--hil-report")
    if not out or not hr.trace:
        return
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:] + ".png"
    path = Path(out) / "plots" / name
    try:
        plot_trace(hr.trace, path, item.nodeid, hr.target)
    except Exception as e:  # a plot must never fail a test
        item.user_properties.append(("hil_plot_error", str(e)))
        return
    item.user_properties.append(("hil_plot", "plots/" + name))


def for_target(hr, per_target, what="this test"):
    """The value of a per-target table (TOLERANCE, DURATION_S ...) for this rig; None means
    the test cannot run on this kind of rig: skipped, saying so."""
    v = per_target.get(hr.target)
    if v is None:
        pytest.skip("%s is not defined for %s rigs" % (what, hr.target))
    return v


# ---------------------------------------------------------------------------- reporting

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed:
        hr = item.stash.get(RIG_KEY, None)
        if hr is not None and hr.inst is not None:
            log = hr.event_log_text()
            readings = hr.readings_text()
            rep.sections.append(("pumprig event log (%s)" % rep.when, log))
            rep.sections.append(("instrument readings (%s)" % rep.when, readings))
            # JUnit XML takes properties from the teardown report, which copies the item's
            props = [("pumprig_event_log_" + rep.when, log),
                     ("instrument_readings_" + rep.when, readings)]
            rep.user_properties.extend(props)
            item.user_properties.extend(props)
    return rep


@pytest.hookimpl(trylast=True)
def pytest_report_header(config):
    return "pumprig HIL: --rig %s (worker rigs are allocated at the first test)" % (
        config.getoption("--rig"))


class _Collector:
    """Feeds reports to the HTML writer (on the controller when running under xdist)."""

    def __init__(self, html):
        self.html = html

    def pytest_runtest_logreport(self, report):
        self.html.add(report)

    def pytest_sessionfinish(self, session):
        self.html.write()


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    html = session.config.stash.get(_HTML, None)
    if html is not None:
        session.config.pluginmanager.register(_Collector(html), "pumprig-hil-html")
