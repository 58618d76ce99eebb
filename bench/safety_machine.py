"""The long run of the stateful safety property test (tests/host/test_safety_machine.py), for
`make campaign`:

    PUMPRIG_LONG=1 .venv/bin/python bench/safety_machine.py [--examples 200] [--no-write]

Runs the hypothesis state machine with the long profile (random, not derandomized: every run
explores new sequences), prints the figures (sequences, loop advances, commands, power cuts
inside commands and inside loop iterations, pulses, the worst share of a cap used) and the
shrunk counterexample of a failure, and writes them to docs/benchmarks.md (section
`safety-machine`).
"""

import argparse
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    os.environ["PUMPRIG_LONG"] = "1"
    os.environ["PUMPRIG_LONG_EXAMPLES"] = str(args.examples)
    sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
    sys.path.insert(0, HERE)
    import test_safety_machine as sm
    from hypothesis.stateful import run_state_machine_as_test

    print("safety machine: %d sequences (long profile)" % args.examples, flush=True)
    t0 = time.monotonic()
    failure = None
    try:
        run_state_machine_as_test(sm.SafetyMachine, settings=sm._settings())
    except BaseException as e:  # noqa: BLE001 (a failure is a figure, reported below)
        if isinstance(e, KeyboardInterrupt):
            raise
        failure = "".join(traceback.format_exception_only(type(e), e)).strip()
    wall = time.monotonic() - t0
    fig = dict(sm.STATS)
    fig["wall_s"] = round(wall, 1)
    fig["failed"] = failure is not None
    print(json.dumps(fig, indent=1, sort_keys=True))
    if failure:
        print("FAILED:", failure)
    if not args.no_write:
        from _report import write_section

        cmd = ("make campaign  (PUMPRIG_LONG=1 .venv/bin/python bench/safety_machine.py "
               "--examples %d)" % args.examples)
        body = (
            "tests/host/test_safety_machine.py's hypothesis state machine with the long profile "
            "(up to %d sequences of up to 50 rules; `make test` runs 30 of 25): random valid "
            "plans, refills with new concentrations, patient boluses (new and retried ids), "
            "clock.set either way, daylight-saving changes, acks, time advances and power cuts "
            "inside commands and loop iterations (at the Nth file write, rename or remove). "
            "Invariants from the fake motor's pulses: caps over any 60 min / 24 h of drug "
            "leaving the tip (dead-volume FIFO), account within [pulses, pulses + one segment "
            "per cut], no bolus id dosed twice, no torn state after a cut.\n\n"
            "| figure | value |\n|---|---|\n"
            "| sequences run (examples, shrinking included) | %d |\n"
            "| time advances (loop runs) | %d |\n"
            "| commands | %d (%d refused) |\n"
            "| power cuts | %d (%d inside commands, %d inside loop iterations) |\n"
            "| motor pulses checked against the caps | %d |\n"
            "| worst share of a cap used (1 h / 24 h) | %d %% / %d %% |\n"
            "| failures | %s |\n"
            "| wall time | %.0f s |\n"
            % (args.examples, fig["sequences"], fig["steps"], fig["commands"], fig["refused"],
               fig["cuts"], fig["cuts_in_commands"], fig["cuts_in_loop"], fig["pulses"],
               fig["worst_1h_pct"], fig["worst_24h_pct"],
               "none" if not failure else "1 (shrunk): `%s`" % failure.split("\n")[0][:300],
               wall))
        write_section("safety-machine", "Safety state machine (stateful property test)", cmd,
                      body)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
