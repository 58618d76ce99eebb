"""How long does it take to ask a running rig for its status?

Side by side, on one virtual rig (real time) whose firmware is running plan P1:

- protocol: `Client.status()` round trips on an open, logged-in session (the median of N after
  a warm-up), and `Client.clock_get()`, a command whose code the firmware loads from its .mpy
  for the call and drops after it (pumpcore.clinician);
- mpremote exec: what people do without a protocol, `mpremote connect PORT exec "<code>"`,
  the code reading the firmware's `data/count` and `data/plan` records, the plan CRC and the
  battery ADC, and printing them (as close to `status` as the REPL gets). The REPL is closed
  while therapy runs, so before each run (not timed) the rig is reset and stopped with the
  clinician's `maintenance`; at the end the plan is resumed.

    .venv/bin/python bench/bench_protocol.py [--n 200] [--runs 15] [--no-write]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import write_section  # noqa: E402

COMMAND = ".venv/bin/python bench/bench_protocol.py"

# The REPL's "status": the firmware's own records and the battery ADC (pin 26, 2:1 divider).
STATUS_CODE = (
    "import json,machine\n"
    "from pumpcore import plan as P\n"
    "def rec(n):\n"
    " f=open('data/'+n);r=f.read();f.close();return json.loads(r[:r.rindex('*')])\n"
    "c=rec('count');p=rec('plan')['plan']\n"
    "mv=machine.ADC(26).read_u16()*3300*2//65535\n"
    "print(json.dumps({'delivered_steps':c['steps'],'reservoir_nl':c['volume_nl'],"
    "'plan_crc':P.crc(p),'mode':p['basal']['kind'],'battery_mv':mv}))\n"
)


def _ms(s):
    return s * 1000.0


def _wait_firmware(Client, link, home, timeout_s=20.0):
    from pumprig.errors import PumprigError

    end = time.monotonic() + timeout_s
    while True:
        try:
            with Client(link, role=None, home=home, timeout=0.5) as c:
                return c.info
        except PumprigError:
            if time.monotonic() > end:
                raise
            time.sleep(0.01)


def _mpremote_argv(link):
    exe = Path(sys.executable).with_name("mpremote")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "mpremote"]
    return head + ["connect", link, "exec", STATUS_CODE]


def run(n=200, warmup=20, runs=15):
    from _home import temp_home

    with temp_home("pumprig-bench-home-") as home:
        return _run(home, n, warmup, runs)


def _run(home, n, warmup, runs):
    from pumpcore import plan as core
    from pumprig.client import Client
    from pumprig.plans import load_plan
    from pumprig.virtual.rig import open_rig

    plan = load_plan(ROOT / "examples" / "p1-baclofen-continuous.toml")
    want_crc = core.crc(plan)
    rig = open_rig()  # the firmware as `pumprig flash` installs it: .mpy
    try:
        _wait_firmware(Client, rig.link, home)
        with Client(rig.link, role="clinician", home=home) as c:
            c.refill(20_000_000)
            c.plan_set(plan)

        # --- the protocol
        with Client(rig.link, role="patient", home=home) as c:
            for _ in range(warmup):
                c.status()
            proto_s = []
            for _ in range(n):
                t = time.perf_counter()
                st = c.status()
                proto_s.append(time.perf_counter() - t)
            overlay_s = []
            for _ in range(n // 4):
                t = time.perf_counter()
                ck = c.clock_get()
                overlay_s.append(time.perf_counter() - t)
        assert st["plan_crc"] == want_crc and st["therapy"] == "running", st
        assert "set" in ck, ck

        # --- mpremote exec, a process per query, each interrupting the running firmware
        argv = _mpremote_argv(rig.link)
        mp_s = []
        for _ in range(runs):
            rig.world.reset()
            _wait_firmware(Client, rig.link, home)
            # A pump that has been running a while (the launcher also takes an interpreter
            # that exits within 0.3 s of its start for a crash loop, soft resets included).
            time.sleep(0.4)
            # Ctrl-C is data while therapy runs: the clinician's `maintenance` stops it and
            # opens the REPL, as `pumprig flash` does (not timed)
            with Client(rig.link, role="clinician", home=home) as c:
                c.request("maintenance")
            t = time.perf_counter()
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            mp_s.append(time.perf_counter() - t)
            if r.returncode != 0:
                raise SystemExit("mpremote failed: %s" % (r.stdout + r.stderr)[-500:])
            got = json.loads(r.stdout.strip().splitlines()[-1])
            assert got["plan_crc"] == want_crc and got["mode"] == "continuous", got

        # the firmware runs the plan again afterwards, plan intact
        rig.world.reset()
        info = _wait_firmware(Client, rig.link, home)
        assert info["plan_crc"] == want_crc
        with Client(rig.link, role="clinician", home=home) as c:
            c.therapy_resume()
            assert c.status()["therapy"] == "running"
    finally:
        rig.stop()

    proto_med = statistics.median(proto_s)
    q = statistics.quantiles(proto_s, n=20)
    mp_med = statistics.median(mp_s)
    return {
        "n": n, "runs": runs,
        "protocol_median_ms": _ms(proto_med), "protocol_p95_ms": _ms(q[18]),
        "protocol_min_ms": _ms(min(proto_s)), "protocol_max_ms": _ms(max(proto_s)),
        "mpremote_median_ms": _ms(mp_med), "mpremote_min_ms": _ms(min(mp_s)),
        "mpremote_max_ms": _ms(max(mp_s)),
        "ratio": mp_med / proto_med,
        "overlay_median_ms": _ms(statistics.median(overlay_s)), "overlay_n": len(overlay_s),
    }  # fmt: skip


def body(r):
    return f"""
Asking a running virtual rig (real time, firmware running plan P1) for its status: through the
protocol (`Client.status()` on an open, logged-in session; {r['n']} requests after a warm-up)
and the way it is done without one, `mpremote connect PORT exec "..."` with code that reads the
firmware's `data/count` and `data/plan` records, computes the plan CRC and reads the battery
ADC ({r['runs']} runs; before each, not timed, the rig is reset and the clinician's
`maintenance` stops therapy, since the REPL is closed while therapy runs; at the end the plan is
resumed and checked).

| query | median | spread |
|---|---|---|
| protocol `status` round trip | {r['protocol_median_ms']:.2f} ms | p95 {r['protocol_p95_ms']:.2f} ms, max {r['protocol_max_ms']:.2f} ms |
| protocol `clock.get` round trip (code loaded for the call) | {r['overlay_median_ms']:.2f} ms | n={r['overlay_n']} |
| `mpremote connect PORT exec` | {r['mpremote_median_ms']:.0f} ms | {r['mpremote_min_ms']:.0f}–{r['mpremote_max_ms']:.0f} ms |

The protocol is **{r['ratio']:.0f}×** faster than `mpremote exec` (target: at least 50×); its
median round trip is {r['protocol_median_ms']:.2f} ms (target: under 5 ms). mpremote needs therapy
stopped to reach the REPL; the protocol does not. The firmware is installed as
`pumprig flash` installs it (.mpy): `clock.get` shows what loading a command's module for the
call (and dropping it after, to keep the heap small) adds to a round trip.
"""  # noqa: E501


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="protocol requests timed")
    ap.add_argument("--runs", type=int, default=15, help="mpremote runs timed")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    r = run(n=args.n, runs=args.runs)
    print("protocol status round trip: median %.2f ms (p95 %.2f ms, n=%d)"
          % (r["protocol_median_ms"], r["protocol_p95_ms"], r["n"]))  # fmt: skip
    print("mpremote exec:              median %.0f ms (n=%d)" % (r["mpremote_median_ms"], r["runs"]))
    print("ratio: %.0fx" % r["ratio"])
    print("clock.get (loaded for the call): median %.2f ms" % r["overlay_median_ms"])
    if not args.no_write:
        path = write_section("protocol", "Protocol round trip vs mpremote exec", COMMAND, body(r))
        print("written to %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
