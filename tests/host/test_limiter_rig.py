"""The dose limiter and the account's uncertainty on the virtual rig (issue 11, findings 1 and 9).

Every dose figure here comes from the world's step log (`segments`, `measure`), never from the
firmware's word. The firmware runs as flashed (.mpy).
"""

import os
import shutil
import sys

import pytest

pytest.importorskip("serial")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
sys.path.insert(0, os.path.join(ROOT, "bench"))

HOUR_MS = 3_600_000
NG_PER_STEP = 2500  # 0.25 µL at 10 mg/mL
# finding 1, canonical: morphine 10 mg/mL, basal 2 mg/day, start bolus 50 mg over 1 h,
# caps 3 mg/24 h and 0.5 mg/h
F1 = {"v": 1, "drug": "morphine", "conc_ng_ml": 10_000_000,
      "basal": {"kind": "continuous", "ng_day": 2_000_000}, "min_nl_day": 0, "catheter_nl": 0,
      "start": {"kind": "bolus", "ng": 50_000_000, "dur_s": 3600}, "periodic": None,
      "patient": None,
      "reservoir": {"low_nl": 2_000_000, "empty_nl": 1_000_000, "on_empty": "stop",
                    "refill_by_days": 0},
      "caps": {"ng_24h": 3_000_000, "ng_1h": 500_000}}
P1 = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
      "basal": {"kind": "continuous", "ng_day": 400_000}}


def _pulse_times(world):
    """The world's forward pulses up to its present instant, in µs."""
    now_us = world.measure()["time_ms"] * 1000
    out = []
    for s in world.segments(0):
        if not s["forward"]:
            continue
        n = s["made"] if s["made"] is not None else s["count"]
        t = s["start_us"] + s["first_us"]
        out.extend(t + k * s["interval_us"] for k in range(n)
                   if t + k * s["interval_us"] <= now_us)
    return sorted(out)


def _max_in_window(times, w_us):
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - w_us:
            j += 1
        best = max(best, i - j + 1)
    return best


def _rig(tmp_path, monkeypatch, firmware=None):
    from pumprig.virtual.rig import open_rig

    monkeypatch.setenv("PUMPRIG_HOME", str(tmp_path / "home"))
    return open_rig(warp=True, board_dir=firmware)


def _connect(rig, tmp_path):
    from pumprig.virtual.link import connect as _vconnect

    return _vconnect(rig.link, home=str(tmp_path / "home"))


def test_finding1_plan_held_by_the_firmware_within_caps(tmp_path, monkeypatch):
    """Finding 1 on the rig: a start bolus of 50 mg over 1 h under caps of 3 mg/24 h and
    0.5 mg/h. The firmware is flashed with plan rules that let any plan through (as if they had
    a bug): the limiter alone must hold delivery. The world's pulses stay within both rolling
    windows over 40 h, CAP_REACHED sounds, and the basal runs again once the day allows."""
    fw = tmp_path / "fw"
    shutil.copytree(os.path.join(ROOT, "board"), fw)
    with open(fw / "pumpcore" / "plan.py", "a") as f:
        f.write("\n\ndef validate(plan, limits=None):  # a rules bug: every plan passes\n"
                "    return plan\n")
    with open(fw / "pumpcore" / "worst.py", "a") as f:  # the worst-window stage too
        f.write("\n\ndef check(plan, ctx):\n    return None\n")
    with _rig(tmp_path, monkeypatch, firmware=fw) as rig:
        w = rig.world
        c = _connect(rig, tmp_path)
        c.refill(20_000_000)
        c.plan_set(F1)
        w.advance(by_ms=HOUR_MS)
        st = c.status()
        assert "CAP_REACHED" in st["alarms"]
        w.advance(by_ms=39 * HOUR_MS)
        times = _pulse_times(w)
        assert len(times) == w.measure()["pulses_fwd"]
        assert _max_in_window(times, HOUR_MS * 1000) * NG_PER_STEP <= 500_000
        assert _max_in_window(times, 24 * HOUR_MS * 1000) * NG_PER_STEP <= 3_000_000
        # unlimited it would be 20 000 steps (50 mg) in the first hour
        t0 = times[0]
        assert sum(1 for t in times if t < t0 + HOUR_MS * 1000) <= 200
        # the basal again on the second day (0.2 mL/day = 800 steps/day)
        assert sum(1 for t in times if t > t0 + 30 * HOUR_MS * 1000) >= 250
        log = c.log_all(since=0)  # every page: logins and the clinician audit come first
        caps = [e for e in log if e["kind"] == "cap.reached"]
        assert caps and caps[0]["data"]["cap_ng"] in (500_000, 3_000_000)
        c.close()


def test_finding9_cut_mid_segment_uncertainty_bounds_the_pulses(tmp_path, monkeypatch):
    """Finding 9 on the rig: the power fails half way through a slow basal segment (P1: 40
    steps over 72 min). After the restart the status shows uncertain_nl > 0, and the world's
    pulses lie within [account - uncertain, account]."""
    with _rig(tmp_path, monkeypatch) as rig:
        w = rig.world
        c = _connect(rig, tmp_path)
        c.refill(20_000_000)
        c.plan_set(P1)
        w.advance(by_ms=3 * HOUR_MS)
        seg = [s for s in w.segments(0) if s["made"] is None]
        assert seg, "a segment in flight"
        s = seg[-1]
        t_kill = (s["start_us"] + s["first_us"] + s["interval_us"] * (s["count"] // 2)) // 1000
        w.fault(kill_at_ms=t_kill)
        w.advance(to_ms=t_kill, timeout_s=120)
        c.close()
        w.power_on()
        import time

        end = time.monotonic() + 30
        while time.monotonic() < end:
            ws = w.status()
            if ws["state"] == "running" and ws["waiting"]:
                break
            time.sleep(0.01)
        c = _connect(rig, tmp_path)
        st = c.status()
        pulsed = w.measure()["pulses_fwd"]
        unc_steps = st["uncertain_nl"] * 1000 // 250_000
        assert st["uncertain_nl"] > 0
        assert st["delivered_steps"] - unc_steps <= pulsed < st["delivered_steps"]
        c.close()
