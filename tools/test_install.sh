#!/bin/sh
# The fresh-environment install test (`make test-install`, part of `make test`): build the
# wheel, install it with its [sim,hil] extras into a new virtual environment in a temporary
# folder outside the checkout, and from there run the demo (short) and one HIL test file as a
# lab would keep it in its own repository: `pytest --rig sim`, no conftest of ours. Also
# simulate on a packaged example plan, bench on a throwaway virtual rig, and `pumprig sim`
# with `flash` and `status` against it.
set -eu
PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pumprig-install-XXXXXX")
SIM=
trap '[ -n "$SIM" ] && kill -INT $SIM 2>/dev/null && wait $SIM; rm -rf "$TMP"' EXIT
export PUMPRIG_HOME="$TMP/home"         # the test's keys, never the user's
echo "install test in $TMP"
# build from a copy: the build writes build/ and *.egg-info beside its sources
mkdir "$TMP/src"
(cd "$REPO" && tar cf - --exclude=__pycache__ pyproject.toml README.md host board examples \
    hil/pumprig_hil) | (cd "$TMP/src" && tar xf -)
"$PYTHON" -m pip wheel -q --no-deps -w "$TMP/dist" "$TMP/src" 2>"$TMP/build.log" \
    || { cat "$TMP/build.log"; exit 1; }
"$PYTHON" -m venv "$TMP/venv"
WHEEL=$(ls "$TMP"/dist/pumprig-*.whl)
"$TMP/venv/bin/pip" install -q --disable-pip-version-check "$WHEEL[sim,hil]" 2>"$TMP/pip.log" \
    || { cat "$TMP/pip.log"; exit 1; }
# a lab's folder: nothing of the checkout on sys.path, the package's own firmware
mkdir "$TMP/lab"
cd "$TMP/lab"
"$TMP/venv/bin/python" - <<'PY'
import pumprig.firmware as f, pumprig_hil.plugin as p
import pumprig_hil.plans as plans, pumprig_hil.plan_crc as crc
for path in (f.board_dir(), f.examples_dir(), p.__file__, plans.__file__, crc.__file__):
    assert "site-packages" in str(path), path
plan = plans.dye_plan(21_600_000)
assert crc.plan_crc(plan) == crc.plan_crc(crc.normalise(plan)), plan
assert plans.example("p1")[0]["drug"] == "baclofen"
print("firmware from", f.board_dir())
PY
"$TMP/venv/bin/pumprig" demo --days 3 --out "$TMP/lab/demo"
test -s "$TMP/lab/demo/demo-delivery.png"
"$TMP/venv/bin/pumprig" simulate --days 2 --plot "$TMP/lab/p5.png" \
    "$TMP/venv/lib/python"*/site-packages/pumprig/_examples/p5-morphine-patient.toml \
    >"$TMP/simulate.log" 2>&1 || { cat "$TMP/simulate.log"; exit 1; }
test -s "$TMP/lab/p5.png"
echo "simulate: $(grep -m1 'step error' "$TMP/simulate.log")"
"$TMP/venv/bin/pumprig" bench --port sim --rate "0.5 mL/day" --duration 2h \
    --out "$TMP/lab/bench" >"$TMP/bench.log" 2>&1 || { cat "$TMP/bench.log"; exit 1; }
test -s "$TMP/lab/bench/report.html"
echo "bench: $(tail -n 1 "$TMP/bench.log")"
# `pumprig sim` in the background, then flash and status against it, as README shows
"$TMP/venv/bin/pumprig" sim --link "$TMP/lab/rig" --blank >"$TMP/sim.log" 2>&1 &
SIM=$!
i=0
until [ -e "$TMP/lab/rig" ]; do
    i=$((i + 1)); [ $i -le 600 ] || { cat "$TMP/sim.log"; exit 1; }
    kill -0 $SIM 2>/dev/null || { cat "$TMP/sim.log"; exit 1; }
    sleep 0.1
done
"$TMP/venv/bin/pumprig" --port "$TMP/lab/rig" flash >"$TMP/flash.log" 2>&1 \
    || { cat "$TMP/flash.log" "$TMP/sim.log"; exit 1; }
"$TMP/venv/bin/pumprig" --port "$TMP/lab/rig" status
kill -INT $SIM; wait $SIM || true; SIM=
# the test file alone: its plans and the documented CRC rule come from the installed plugin
cp "$REPO/hil/test_hil_protocol.py" "$TMP/lab/"
"$TMP/venv/bin/pytest" -q -p no:cacheprovider --rig sim --hil-report "$TMP/lab/report" \
    test_hil_protocol.py
grep -q "Rig uid" "$TMP/lab/report/index.html"
echo "install test: wheel into a fresh environment; demo, simulate, bench, sim, flash, status and a HIL file passed"
