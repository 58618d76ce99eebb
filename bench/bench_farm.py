"""The farm (issue 15): a status round trip through a labgrid place (RFC 2217 via ser2net)
against the rig's local pty, side by side in one run, and the HIL suite's wall time on two
remote places against two local virtual rigs. Runs in the labgrid environment:

    .venv-farm/bin/python bench/bench_farm.py [--requests 200] [--commands 5] [--reps 1]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "farm"))
from _lab import BIN, PLACES, start_farm  # noqa: E402
from _report import write_section  # noqa: E402


def round_trips(f, n):
    """Median status round trip (ms) through place-a (ser2net as labgrid starts it), through
    place-b (ser2net with TCP_NODELAY, `farm export --ser2net-nodelay`) and on a local pty,
    interleaved in batches of 10 so all three see the same machine load."""

    from pumprig import farm as lgfarm
    from pumprig.client import Client
    from pumprig.virtual.rig import open_rig

    os.environ.update(PUMPRIG_HOME=str(f.tmp / "client"), LG_COORDINATOR=f.coord)
    vr = open_rig()  # the .mpy firmware, as flash installs it
    try:
        with lgfarm.hold("lg:" + PLACES[0]) as la, lgfarm.hold("lg:" + PLACES[1]) as lb, \
                Client(la.url, role="patient") as a, Client(lb.url, role="patient") as b, \
                Client(vr.link, role="patient", home=f.tmp / "client") as local:
            times = {"plain": [], "nodelay": [], "local": []}
            for _ in range(max(1, n // 10)):
                for name, c in (("plain", a), ("nodelay", b), ("local", local)):
                    for _ in range(10):
                        t = time.perf_counter()
                        c.status()
                        times[name].append((time.perf_counter() - t) * 1000)
            # the control service: signed requests through place-a's relay (pumprig.farm_auth)
            # against the local rig's control socket, interleaved the same way
            times.update(control_remote=[], control_local=[])
            with lgfarm.remote_world(la) as rw:
                for _ in range(max(1, n // 10)):
                    for name, w in (("control_remote", rw), ("control_local", vr.world)):
                        for _ in range(10):
                            t = time.perf_counter()
                            w.measure()
                            times[name].append((time.perf_counter() - t) * 1000)
            check_us = holder_check_us(f, la)
    finally:
        vr.stop()
    out = {k: statistics.median(v) for k, v in times.items()}
    out["check_us"] = check_us
    return out, len(times["local"])


def holder_check_us(f, lease, n=2000):
    """Median cost (µs) of the relay's check that a request comes from the place's holder
    (pumprig.farm_holders.PlaceWatch, its view of the coordinator's places), in process."""
    from pumprig.farm import identity
    from pumprig.farm_holders import PlaceWatch, resource_path

    watch = PlaceWatch(f.coord, "hostA")
    try:
        if not watch.ready.wait(10):
            raise SystemExit("bench_farm: no view of the coordinator: %s" % watch.error)
        path = resource_path("hostA", f.hosts["hostA"]["rig"], "control")
        who = identity()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            watch.check(path, who)
            times.append((time.perf_counter() - t) * 1e6)
    finally:
        watch.stop()
    return statistics.median(times)


def auth_cost_us(f, n=2000):
    """Median cost (µs) of the signatures of one control request and its reply, in process:
    the client's wrap and unwrap, the relay's check and seal (pumprig.farm_auth)."""
    import json

    from pumprig import farm_auth
    from pumprig.keys import KeyStore

    home = f.tmp / "client"
    uid = next(u for u, e in json.loads(f.keys.read_text()).items() if "control" in e)
    guard = farm_auth.Guard(KeyStore(home).control_token(uid), uid)
    session = farm_auth.Session(guard.hello(), "bench", home=home)
    reply = json.dumps({"ok": True, "result": {"pulses_fwd": 123456, "pulses_rev": 0,
                                               "volume_out_nl": 30864000, "time_ms": 86400000}})
    times = []
    for _ in range(n):
        t = time.perf_counter()
        guard.check(session.wrap({"op": "measure"}))
        session.unwrap(guard.seal(reply))
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def command_walls(f, n):
    """Median wall time (s) of a whole `pumprig status` command: lg:PLACE (acquire, show,
    connect, request, release) against the local pty, interleaved."""
    env = f.env(f.tmp / "client")
    local_link = str(f.hosts["hostA"]["home"] / f.hosts["hostA"]["rig"])
    walls = {"remote": [], "local": []}
    for _ in range(n):
        for name, port in (("remote", "lg:" + PLACES[1]), ("local", local_link)):
            t = time.monotonic()
            r = subprocess.run([str(BIN / "pumprig"), "--port", port, "status"], env=env,
                               capture_output=True, text=True, timeout=120)
            walls[name].append(time.monotonic() - t)
            if r.returncode:
                raise SystemExit("bench_farm: status on %s failed: %s" % (port, r.stderr))
    return {k: statistics.median(v) for k, v in walls.items()}


def hil_wall(f, rig, suite):
    env = f.env(f.tmp / "client")
    t = time.monotonic()
    p = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-n", "2"]
                       + suite + ["--rig", rig], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    wall = time.monotonic() - t
    tail = (p.stdout.strip().splitlines() or ["?"])[-1]
    if p.returncode not in (0, 1):      # 1: tests failed, the run itself went through
        raise SystemExit("bench_farm: the HIL suite did not run on %s:\n%s"
                         % (rig, p.stdout[-3000:]))
    failed = sorted({x.split()[1] for x in p.stdout.splitlines() if x.startswith("FAILED ")})
    return wall, tail, failed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--commands", type=int, default=5)
    ap.add_argument("--reps", type=int, default=1, help="HIL suite runs per setup")
    ap.add_argument("--suite", default="hil", help="HIL paths (default: the whole suite)")
    a = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pumprig-bench-farm-") as tmp:
        f = start_farm(Path(tmp) / "rt", nodelay=("hostB",))
        try:
            rt, n = round_trips(f, a.requests)
            sign_us = auth_cost_us(f)
            walls = command_walls(f, a.commands)
        finally:
            f.stop()
        f = start_farm(Path(tmp) / "hil", nodelay=("hostA", "hostB"))
        try:
            hil = {"remote": [], "local": []}
            tails = {"remote": [], "local": []}
            failed = []
            for _ in range(a.reps):
                for name, rig in (("remote", "lg:%s,%s" % PLACES), ("local", "sim")):
                    w, tail, bad = hil_wall(f, rig, a.suite.split())
                    hil[name].append(w)
                    tails[name].append(tail)
                    failed += ["%s (%s)" % (t, name) for t in bad]
        finally:
            f.stop()
    hr = {k: statistics.median(v) for k, v in hil.items()}
    load1 = os.getloadavg()[0]
    body = "\n".join([
        "| what | through a labgrid place | local pty | ratio |",
        "|---|---|---|---|",
        "| status round trip, ser2net as labgrid starts it (median of %d) | %.2f ms | %.2f ms "
        "| %.2f x |" % (n, rt["plain"], rt["local"], rt["plain"] / rt["local"]),
        "| status round trip, ser2net with TCP_NODELAY (median of %d) | %.2f ms | %.2f ms "
        "| %.2f x |" % (n, rt["nodelay"], rt["local"], rt["nodelay"] / rt["local"]),
        "| control service `measure` round trip, signed, through the relay (median of %d) "
        "| %.2f ms | %.2f ms (its control socket) | %.2f x |"
        % (n, rt["control_remote"], rt["control_local"],
           rt["control_remote"] / rt["control_local"]),
        "| of which signing a request and its reply, both ends, in process (median of 2000) "
        "| %.1f µs | | |" % sign_us,
        "| of which the relay's check that the client holds the place, in process (median of "
        "2000) | %.1f µs | | |" % rt["check_us"],
        "| whole `pumprig status` command, TCP_NODELAY (median of %d) | %.2f s | %.2f s "
        "| %.2f x |" % (a.commands, walls["remote"], walls["local"],
                         walls["remote"] / walls["local"]),
        "| HIL suite `%s`, -n 2, TCP_NODELAY (median of %d run(s) each) | %.1f s (%s) "
        "| %.1f s (%s) | %.2f x |" % (a.suite, a.reps, hr["remote"], "; ".join(tails["remote"]),
                                      hr["local"], "; ".join(tails["local"]),
                                      hr["remote"] / hr["local"]),
        "",
        "Round trips, logged in as patient, interleaved in batches of 10: two places of one "
        "farm on this host (coordinator, exporters and ser2net on 127.0.0.1, RFC 2217) and a "
        "third virtual rig on its local pty. labgrid starts ser2net without TCP_NODELAY: a "
        "reply sent in two segments then waits for the client's delayed ACK (about 40 ms on "
        "Linux); `pumprig farm export --ser2net-nodelay DIR` writes a ser2net wrapper that "
        "turns it on (docs/farm.md). The whole command adds labgrid-client's acquire, show "
        "and release (a Python start-up each). The control service: a virtual rig's world "
        "measurements through its exporter host's relay, each request and reply signed with "
        "the rig's token (HMAC-SHA256, pumprig.farm_auth) and obeyed only from the place's "
        "holder (the relay's view of the coordinator's places, pumprig.farm_holders), against "
        "a local rig's control socket (unsigned, its owner's only). HIL: two places on two exporter hosts against "
        "two local virtual rigs (`--rig sim`), two workers each. All on one machine: a lab "
        "network adds its own latency. Load average %.1f at the start, %.1f at the end (2 "
        "cores, shared)." % (load0, load1) + (
            " Failed in these runs: %s." % ", ".join(failed) if failed else "")])
    sys.stdout.write(body + "\n")
    cmd = ".venv-farm/bin/python bench/bench_farm.py --requests %d --commands %d --reps %d" % (
        a.requests, a.commands, a.reps)
    path = write_section("farm", "Farm: a labgrid place against a local port", cmd, body)
    sys.stdout.write("written to %s\n" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
