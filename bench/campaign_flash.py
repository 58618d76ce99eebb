"""Power cuts during `pumprig flash` on the virtual rig (issue 12, finding 5).

    .venv/bin/python bench/campaign_flash.py [--cuts 50] [--seed 1] [--no-write]

Two builds of the firmware that differ in every file: A, compiled to .mpy, reporting firmware
"<version>+a", and B, the .py sources (`--no-compile`), reporting "<version>+b". Each cycle
flashes the other build than the one installed (so every file is copied, and every old one
removed) with `pumprig flash` in its own process, and at a random moment (uniform over the
duration of an uncut flash of the same direction, measured first) cuts the rig's power and
kills the flash process (the cable pulled). Then the rig is powered on and asked `hello`
within a bounded wait (HELLO_WAIT_S):
  old      the build that was installed answers;
  new      the build being flashed answers;
  safe     the FIRMWARE safe state answers (hello and status with the FIRMWARE alarm, the motor
           disabled);
  hang     no answer: a failure.
Then `pumprig flash` of the new build runs again and must bring it up ("repaired").

`--commit-cuts N` runs the other campaign: cuts inside the commit step (commit_cuts()), which
random cuts rarely hit.

The figures go to docs/benchmarks.md (sections `campaign-flash`, `campaign-flash-commit`);
tests/host/test_flash_cuts.py runs 5 cuts inside `make test`.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HELLO_WAIT_S = 20.0


class CampaignError(AssertionError):
    """A cut left the rig hung, or a flash did not repair it."""


def make_build(dest, tag):
    """A copy of board/ whose app reports firmware "<version>+<tag>"."""
    shutil.copytree(os.path.join(ROOT, "board"), dest,
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    app = os.path.join(dest, "pumpcore", "app.py")
    with open(app) as f:
        text = f.read()
    i = text.index('FIRMWARE = "') + len('FIRMWARE = "')
    j = text.index('"', i)
    version = text[i:j] + "+" + tag
    with open(app, "w") as f:
        f.write(text[:i] + version + text[j:])
    return version


def hello(link, wait_s=HELLO_WAIT_S):
    """(firmware, status) of the rig, or (None, None) when nothing answers within wait_s."""
    from pumprig.client import Client
    from pumprig.errors import PumprigError

    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            with Client(link, role=None, timeout=1.0) as c:
                fw = c.info.get("firmware")
                st = c.status() if fw == "safe" else None
                return fw, st
        except PumprigError:
            time.sleep(0.1)
    return None, None


def _flash_proc(link, build, mpy, home):
    argv = [sys.executable, "-m", "pumprig.cli", "--port", link, "flash", "--board-dir", build]
    if not mpy:
        argv.append("--no-compile")
    env = dict(os.environ, PUMPRIG_HOME=home)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _kill(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)    # the flash process and its mpremote
        except ProcessLookupError:
            pass
    p.wait()


def _timed_flash(link, build, mpy, home):
    t = time.monotonic()
    p = _flash_proc(link, build, mpy, home)
    if p.wait(300) != 0:
        raise CampaignError("an uncut flash failed")
    return time.monotonic() - t


def flash_cuts(cuts=50, seed=1, progress=None):
    """Run the campaign; returns the figures (raises CampaignError on a hang or a failed
    repair)."""
    from pumprig.virtual.rig import VirtualRig

    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="pumprig-flashcut-")
    home = os.path.join(tmp, "home")
    old_home = os.environ.get("PUMPRIG_HOME")
    os.environ["PUMPRIG_HOME"] = home
    builds = {"a": (os.path.join(tmp, "a"), True), "b": (os.path.join(tmp, "b"), False)}
    versions = {k: make_build(d, k) for k, (d, _) in builds.items()}
    fig = {"cuts": 0, "old": 0, "new": 0, "safe": 0, "hang": 0, "repaired": 0,
           "safe_alarm_ok": 0, "hello_s": [], "cut_fraction": [], "flash_s": {}}
    try:
        with VirtualRig(blank=True) as rig:
            link = rig.link
            # an uncut flash each way: how long a cut may come after the start
            _timed_flash(link, *builds["a"], home)
            fig["flash_s"]["a->b"] = _timed_flash(link, *builds["b"], home)
            fig["flash_s"]["b->a"] = _timed_flash(link, *builds["a"], home)
            cur = "a"
            for k in range(cuts):
                new = "b" if cur == "a" else "a"
                span = fig["flash_s"]["%s->%s" % (cur, new)]
                delay = rng.uniform(0, span * 1.1)
                p = _flash_proc(link, *builds[new], home)
                t0 = time.monotonic()
                while time.monotonic() - t0 < delay and p.poll() is None:
                    time.sleep(0.005)
                rig.world.power_cut()
                _kill(p)
                rig.world.power_on()
                t = time.monotonic()
                fw, st = hello(link)
                fig["hello_s"].append(time.monotonic() - t)
                fig["cuts"] += 1
                fig["cut_fraction"].append(round(delay / span, 3))
                if fw == versions[cur]:
                    what = "old"
                elif fw == versions[new]:
                    what = "new"
                elif fw == "safe":
                    what = "safe"
                    m = rig.world.measure()
                    if "FIRMWARE" in st["alarms"] and not m["enabled"] and st["bad"]:
                        fig["safe_alarm_ok"] += 1
                else:
                    fig["hang"] += 1
                    raise CampaignError("cut %d (%.2f s into %s->%s): no answer (%r)"
                                        % (k, delay, cur, new, fw))
                fig[what] += 1
                # the repair: flash the new build again, it must come up
                p = _flash_proc(link, *builds[new], home)
                if p.wait(300) != 0:
                    raise CampaignError("cut %d: the repair flash failed" % k)
                fw, _ = hello(link)
                if fw != versions[new]:
                    raise CampaignError("cut %d: after the repair the rig runs %r" % (k, fw))
                fig["repaired"] += 1
                if progress:
                    progress("cut %d/%d at %.0f %% of %s->%s: %s, repaired"
                             % (k + 1, cuts, 100 * delay / span, cur, new, what))
                cur = new
    finally:
        if old_home is None:
            os.environ.pop("PUMPRIG_HOME", None)
        else:
            os.environ["PUMPRIG_HOME"] = old_home
        shutil.rmtree(tmp, ignore_errors=True)
    return fig


def commit_cuts(cuts=20, seed=2, progress=None):
    """Cuts inside the commit step, which random cuts rarely hit (it takes a small part of a
    flash): the flash's commit script is stopped after a random number i of its operations
    (renames and removals, 0 to all; the manifest's rename never), as a cut there would, then
    the power is cut and restored. i = 0 leaves the old set; any i > 0 leaves files that do not
    match the old manifest: the FIRMWARE safe state. Then `pumprig flash` must repair it."""
    import pumprig.flash as fl
    from pumprig.errors import PumprigError
    from pumprig.virtual.rig import VirtualRig

    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="pumprig-commitcut-")
    old_home = os.environ.get("PUMPRIG_HOME")
    os.environ["PUMPRIG_HOME"] = os.path.join(tmp, "home")
    builds = {"a": (os.path.join(tmp, "a"), True), "b": (os.path.join(tmp, "b"), False)}
    versions = {k: make_build(d, k) for k, (d, _) in builds.items()}
    fig = {"cuts": 0, "old": 0, "new": 0, "safe": 0, "hang": 0, "repaired": 0,
           "safe_alarm_ok": 0, "ops_done": []}
    real = fl._commit_script
    try:
        with VirtualRig(blank=True) as rig:
            fl.flash(rig.link, board_dir=builds["a"][0])
            cur = "a"
            for k in range(cuts):
                new = "b" if cur == "a" else "a"
                done = []

                def partial(changed, removed, done=done):
                    ops = len(changed) + len(removed)
                    i = rng.randint(0, ops)
                    done.append(i)
                    script = real(changed, removed)
                    # stop after i operations: count them in the script itself
                    head, tail = script.split("for p in ", 1)
                    return (head + "_n = [%d]\n" % i + "def _step():\n _n[0] -= 1\n"
                            " if _n[0] < 0:\n  raise SystemExit(1)\n"
                            + ("for p in " + tail).replace(" mv(p)\n", " _step()\n mv(p)\n")
                            .replace(" try:\n  os.remove(p)", " _step()\n try:\n  os.remove(p)")
                            .replace("mv('%s')" % fl.MANIFEST, "raise SystemExit(1)"))

                fl._commit_script = partial
                try:
                    fl.flash(rig.link, board_dir=builds[new][0], compile_mpy=builds[new][1])
                except PumprigError:
                    pass
                finally:
                    fl._commit_script = real
                rig.world.power_cut()
                rig.world.power_on()
                fw, st = hello(rig.link)
                fig["cuts"] += 1
                fig["ops_done"].append(done[0] if done else None)
                if fw == versions[cur]:
                    what = "old"
                elif fw == versions[new]:
                    what = "new"
                elif fw == "safe":
                    what = "safe"
                    if "FIRMWARE" in st["alarms"] and not rig.world.measure()["enabled"]:
                        fig["safe_alarm_ok"] += 1
                else:
                    fig["hang"] += 1
                    raise CampaignError("commit cut %d: no answer (%r)" % (k, fw))
                fig[what] += 1
                fl.flash(rig.link, board_dir=builds[new][0], compile_mpy=builds[new][1])
                if hello(rig.link)[0] != versions[new]:
                    raise CampaignError("commit cut %d: the repair did not bring %s up"
                                        % (k, new))
                fig["repaired"] += 1
                if progress:
                    progress("commit cut %d/%d after %s ops of %s->%s: %s, repaired"
                             % (k + 1, cuts, done[0] if done else "?", cur, new, what))
                cur = new
    finally:
        fl._commit_script = real
        if old_home is None:
            os.environ.pop("PUMPRIG_HOME", None)
        else:
            os.environ["PUMPRIG_HOME"] = old_home
        shutil.rmtree(tmp, ignore_errors=True)
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--commit-cuts", type=int, default=0,
                    help="instead: this many cuts inside the commit step (section "
                         "campaign-flash-commit)")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.commit_cuts:
        return _main_commit(args)
    t = time.monotonic()
    fig = flash_cuts(args.cuts, args.seed, progress=print)
    took = time.monotonic() - t
    hs = sorted(fig["hello_s"])
    med = hs[len(hs) // 2] if hs else 0
    body = (
        "Power cuts at random moments during `pumprig flash` on a virtual rig (real time), "
        "each with the flash process killed (cable pulled), alternating two builds that differ "
        "in every file (compiled .mpy, and .py sources). After each cut: power on, `hello` "
        "within %d s, then `pumprig flash` again.\n\n"
        "| cuts | old firmware | new firmware | FIRMWARE safe state | hang | repaired by flash |\n"
        "|---|---|---|---|---|---|\n"
        "| %d | %d | %d | %d (FIRMWARE alarm, motor disabled: %d) | %d | %d |\n\n"
        "Cut moments: uniform over 0-110 %% of an uncut flash (%.1f s .mpy -> .py, %.1f s "
        ".py -> .mpy on this machine); first answer after power-on: median %.2f s, worst "
        "%.2f s. Campaign time %.0f s (seed %d).\n"
        % (HELLO_WAIT_S, fig["cuts"], fig["old"], fig["new"], fig["safe"],
           fig["safe_alarm_ok"], fig["hang"], fig["repaired"], fig["flash_s"]["a->b"],
           fig["flash_s"]["b->a"], med, hs[-1] if hs else 0, took, args.seed))
    print(body)
    if not args.no_write:
        sys.path.insert(0, HERE)
        from _report import write_section

        write_section("campaign-flash", "Power cuts during pumprig flash",
                      "python bench/campaign_flash.py --cuts %d --seed %d"
                      % (args.cuts, args.seed), body)
    return 0


NOTE_OLD = ("An \"old\" after some operations is a .py -> .mpy flash cut among its renames: "
            "the new .mpy files sit beside the listed .py sources, which the import still "
            "takes, so the old set runs whole; once a listed file is replaced or removed it is "
            "the safe state.")


def _main_commit(args):
    t = time.monotonic()
    fig = commit_cuts(args.commit_cuts, args.seed, progress=lambda m: print(m, flush=True))
    took = time.monotonic() - t
    ops = sorted(x for x in fig["ops_done"] if x is not None)
    body = (
        "Cuts inside the commit step of `pumprig flash` (renames, removals, then the manifest's "
        "rename), which cuts at random moments rarely hit: the step is stopped after a random "
        "number of its operations (0 to all but the manifest), then the power is cut and "
        "restored, `hello` within %d s, then `pumprig flash` again; builds alternate as above.\n\n"
        "| cuts | old firmware | new firmware | FIRMWARE safe state | hang | repaired by flash |\n"
        "|---|---|---|---|---|---|\n"
        "| %d | %d | %d | %d (FIRMWARE alarm, motor disabled: %d) | %d | %d |\n\n"
        "Operations done before the cut: %s (0: none, the old set stays). Campaign time %.0f s "
        "(seed %d).\n"
        % (HELLO_WAIT_S, fig["cuts"], fig["old"], fig["new"], fig["safe"], fig["safe_alarm_ok"],
           fig["hang"], fig["repaired"], ", ".join(str(x) for x in ops), took, args.seed))
    body += NOTE_OLD + "\n"
    print(body)
    if not args.no_write:
        sys.path.insert(0, HERE)
        from _report import write_section

        write_section("campaign-flash-commit", "Power cuts inside the flash commit step",
                      "python bench/campaign_flash.py --commit-cuts %d --seed %d"
                      % (args.commit_cuts, args.seed), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
