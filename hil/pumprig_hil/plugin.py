"""pytest plugin for the pumprig HIL suites, installed with `pip install 'pumprig[hil]'` and
registered by the `pytest11` entry point `pumprig`: any repository runs `pytest --rig sim`.

Options (group "pumprig HIL"), each also an ini option (pytest.ini, pyproject.toml's
[tool.pytest.ini_options], ...) under the name in brackets; the command line wins:
--rig [rig], --rigs-file [rigs_file], --rig-lock-dir [rig_lock_dir], --rig-wait [rig_wait],
--hil-report [hil_report], --rig-timeout [rig_timeout].
Fixtures: `hil_rig` (session: this worker's rig), `rig` (per test: known state, teardown that
always stops the motor, skips for missing instruments).
Markers: needs_steps, needs_balance, needs_power_relay, needs_battery_dac, needs_battery_adc,
needs_stall_injection, needs_occlusion_injection, needs_time_warp(why), fresh_rig.

Every test that uses a rig gets a time limit through pytest-timeout (rig_timeout, default
DEFAULT_TIMEOUT_S) unless it has its own `timeout` mark or pytest-timeout's --timeout/ini
`timeout` is given. Reports: pytest-html (`--html FILE`, or `--hil-report DIR` for
DIR/index.html) with an environment section from pytest-metadata (pumprig version, rig option,
each worker's rig uid, board and firmware); each test's step plot is attached to it.
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
from .report import plot_trace

DEFAULT_TIMEOUT_S = 900.0
RIG_FIXTURES = ("rig", "hil_rig")

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
    "protocol": "the protocol conformance suite (hil/test_hil_protocol.py, issue 13): "
                "`pytest hil --rig PORT -m protocol`",
}
_FEATURE_OF = {m: m[len("needs_"):] for m in MARKERS if m.startswith("needs_")}

RIG_KEY = pytest.StashKey()       # item -> HilRig in use
TRACE_DONE = pytest.StashKey()

# name: (command-line flag, ini help, default); the ini value is used when the flag is absent
OPTIONS = {
    "rig": ("--rig", "sim (virtual rigs, the default), all (any rig of the inventory), a rig "
                     "name from the rigs file, a port or pyserial URL, or a USB serial number. "
                     "With -n N each worker takes its own rig. Also $PUMPRIG_RIG.", "sim"),
    "rigs_file": ("--rigs-file", "rig inventory, TOML (default rigs.toml beside the ini file or "
                                 "in the root directory; missing: no bench rigs)", "rigs.toml"),
    "rig_lock_dir": ("--rig-lock-dir", "where rig lock files live (default $PUMPRIG_HOME/locks, "
                                       "else the temporary directory)", None),
    "rig_wait": ("--rig-wait", "wait up to S seconds for a free rig (default 0: fail at once)",
                 "0"),
    "hil_report": ("--hil-report", "write DIR/index.html (pytest-html) and DIR/plots/*.png "
                                   "(step plots at 150 dpi)", None),
    "rig_timeout": ("--rig-timeout", "time limit in seconds of each test that uses a rig "
                                     "(pytest-timeout); 0 for none (default %g)"
                    % DEFAULT_TIMEOUT_S, str(DEFAULT_TIMEOUT_S)),
}


def pytest_addoption(parser):
    g = parser.getgroup("pumprig HIL", "hardware-in-the-loop rigs")
    metavars = {"rig": "RIG", "rigs_file": "TOML", "rig_lock_dir": "DIR", "rig_wait": "S",
                "hil_report": "DIR", "rig_timeout": "S"}
    for name, (flag, text, default) in OPTIONS.items():
        g.addoption(flag, dest="pumprig_" + name, default=None, metavar=metavars[name],
                    help=text + " [ini: %s]" % name)
        parser.addini(name, text, default=default)


def option(config, name):
    """An option's value: the command line, else $PUMPRIG_RIG (rig only), else the ini file,
    else the default. Paths in an ini file are relative to that file's directory."""
    v = config.getoption("pumprig_" + name)
    if v is not None:
        return v
    if name == "rig" and os.environ.get("PUMPRIG_RIG"):
        return os.environ["PUMPRIG_RIG"]
    v = config.getini(name)
    if name in ("rigs_file", "rig_lock_dir", "hil_report") and v:
        base = config.inipath.parent if config.inipath else config.rootpath
        v = str(base / v)
    return v


def _float_option(config, name):
    v = option(config, name)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise pytest.UsageError("pumprig HIL: %s must be a number of seconds, not %r"
                                % (name, v)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", "%s: %s" % (name, text))
    _float_option(config, "rig_wait")
    _float_option(config, "rig_timeout")
    rep = option(config, "hil_report")
    # before pytest-html's own configure (tryfirst): it reads htmlpath there
    if rep and config.pluginmanager.hasplugin("html") and not config.getoption("htmlpath"):
        config.option.htmlpath = str(Path(rep) / "index.html")
    meta = _metadata(config)
    if meta is not None:
        meta["pumprig"] = _version()
        meta["Rig option"] = option(config, "rig")


def _metadata(config):
    """pytest-metadata's dict (the report's environment section), None without the plugin."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return None
    return config.stash.get(metadata_key, None)


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pumprig")
    except PackageNotFoundError:
        return "unknown"


def _worker(config):
    wi = getattr(config, "workerinput", None)
    return wi["workerid"] if wi else "main"


def rig_metadata(hr, worker):
    """The environment entries of a worker's rig: uid, board, firmware (from its hello)."""
    info = (hr.client.info if hr.client is not None else None) or {}
    sfx = "" if worker == "main" else " (%s)" % worker
    return {"Rig" + sfx: hr.spec.name, "Rig uid" + sfx: str(info.get("uid", "?")),
            "Board" + sfx: str(info.get("board", "?")),
            "Firmware" + sfx: str(info.get("firmware", "?"))}


def _publish_rig(config, hr):
    entries = rig_metadata(hr, _worker(config))
    wo = getattr(config, "workeroutput", None)
    if wo is not None:                      # an xdist worker: the controller merges it
        wo.setdefault("pumprig_rig", {}).update(entries)
    meta = _metadata(config)
    if meta is not None:
        meta.update(entries)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist controller: a worker's rig entries join the report's environment section."""
    meta = _metadata(node.config)
    entries = getattr(node, "workeroutput", {}).get("pumprig_rig")
    if meta is not None and entries:
        meta.update(entries)


def pytest_collection_modifyitems(config, items):
    """Default time limit (pytest-timeout) for the tests that use a rig."""
    limit = _float_option(config, "rig_timeout")
    if limit <= 0 or not config.pluginmanager.hasplugin("timeout"):
        return
    if config.getoption("timeout", None) is not None or config.getini("timeout"):
        return          # the user chose pytest-timeout's own limit: it applies as given
    for item in items:
        if (set(RIG_FIXTURES) & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("timeout") is None):
            item.add_marker(pytest.mark.timeout(limit))


def require(hr, feature, what):
    """Skip the test (from a test or fixture) unless the rig has the instrument `feature`;
    `what` says what needs it."""
    if not hr.inst.has(feature):
        pytest.skip("rig %s has no %s: %s needs it (add it to the rig's instruments in the "
                    "rigs file once wired)" % (hr.spec.name, feature, what))


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def hil_rig(pytestconfig, tmp_path_factory):
    """This worker's rig, for the whole session (one per pytest-xdist worker)."""
    from .rig import HilRig

    opt = option(pytestconfig, "rig")
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

                lock = take_place(opt, worker, _float_option(pytestconfig, "rig_wait"))
            else:
                specs = inv.candidates(opt, inv.load(option(pytestconfig, "rigs_file")))
                lock = inv.allocate(specs, inv.lock_dir(option(pytestconfig, "rig_lock_dir")),
                                    _float_option(pytestconfig, "rig_wait"), owner=worker)
        except inv.InventoryError as e:
            raise pytest.UsageError(str(e)) from None
        spec = lock.spec
    hr = None
    try:
        hr = lock.start(home) if hasattr(lock, "start") else HilRig.start(spec, home)
        with contextlib.suppress(Exception):
            _publish_rig(pytestconfig, hr)
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
    out = option(item.config, "hil_report")
    if not out:
        html = item.config.getoption("htmlpath", None)
        out = str(Path(html).parent) if html else None
    if not out or not hr.trace:
        return
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:] + ".png"
    path = Path(out) / "plots" / name
    try:
        plot_trace(hr.trace, path, item.nodeid, hr.target, hr.band)
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
    if rep.when == "teardown" and item.config.pluginmanager.hasplugin("html"):
        plot = dict(item.user_properties).get("hil_plot")
        if plot:
            from pytest_html import extras

            # a link relative to the report page (DIR/index.html beside DIR/plots/)
            rep.extras = getattr(rep, "extras", []) + [extras.image(plot, "steps against time")]
    return rep


@pytest.hookimpl(trylast=True)
def pytest_report_header(config):
    return "pumprig HIL: --rig %s (worker rigs are allocated at the first test)" % (
        option(config, "rig"))
