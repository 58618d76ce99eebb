# pumprig: `make demo` runs the main job on a virtual rig, `make test` runs every test.
# Both create the virtual environment they need (.venv) on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
MPY    := $(BIN)/micropython
STAMP  := $(VENV)/.installed
PORT   ?= $(PUMPRIG_PORT)
RIGS   ?= 1
OUT    ?= out

.PHONY: all venv test test-host test-board test-install test-farm ser2net lint demo flash hil bench campaign clean help

all: help

help:
	@echo "make demo      start a virtual rig, flash it, program P1, simulate 90 days, plot"
	@echo "make test      every test: lint, host, board (CPython + MicroPython), HIL on virtual rigs,"
	@echo "               and the install test (wheel into a fresh environment outside the checkout)"
	@echo "make lint      ruff over everything, mypy over board/ against rp2 and esp32 stubs"
	@echo "make flash PORT=/dev/ttyACM0   flash the firmware to a board"
	@echo "make hil [RIGS=4]              HIL suite against virtual rigs"
	@echo "make bench     benchmarks, written to docs/benchmarks.md"
	@echo "make campaign  power cuts: 200 in a 30-day plan, inside commands, in flash; a key brute"
	@echo "               force, and the long run of the safety state machine"

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[sim,dev]'
	touch $@

test: venv lint test-host test-board hil test-install test-farm

test-host: venv
	$(BIN)/pytest -q -n 2 --dist loadfile tests

# The unit tests import every core module at once and fuzz the decoder: a larger heap than a
# board's. The firmware's own heap needs are measured by bench/bench_memory.py.
test-board: venv
	$(MPY) -X heapsize=1m tests/mpy_runner.py tests/board

# the wheel installed with [sim,hil] into a new venv in a temporary folder, outside the checkout:
# demo, simulate, bench, sim + flash + status, and a HIL test file run as a lab would
# (tools/test_install.sh)
test-install: venv
	PYTHON=$(PY) sh tools/test_install.sh

# The farm (docs/farm.md): labgrid in its own environment. labgrid's pyserial fork installs the
# same `serial` files as pyserial; reinstalling it last makes the fork the one .venv-farm runs,
# so the farm test checks pumprig with it while .venv keeps stock pyserial.
FARM_VENV  := .venv-farm
FARM_STAMP := $(FARM_VENV)/.installed

$(FARM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(FARM_VENV)
	$(FARM_VENV)/bin/python -m pip install -q --upgrade pip
	$(FARM_VENV)/bin/python -m pip install -q -e '.[sim,dev,farm]'
	$(FARM_VENV)/bin/python -m pip install -q --force-reinstall --no-deps pyserial-labgrid
	touch $@

# ser2net from Debian's packages: installed here when we are root with apt, else the command
ser2net:
	@command -v ser2net >/dev/null 2>&1 || test -x /usr/sbin/ser2net || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -qq ser2net >/dev/null || { apt-get update -qq && apt-get install -y -qq ser2net >/dev/null; }; \
	else echo "pumprig: the farm needs ser2net: run  sudo apt-get install -y ser2net"; exit 1; fi

test-farm: $(FARM_STAMP) ser2net
	$(FARM_VENV)/bin/pytest -q -p no:cacheprovider tests/farm

lint: venv
	$(BIN)/ruff check board host tests hil bench tools
	$(PY) tools/typecheck_board.py

demo: venv
	$(BIN)/pumprig demo --out $(OUT)

flash: venv
	@test -n "$(PORT)" || { echo "pumprig: give PORT=/dev/ttyACM0 (or set PUMPRIG_PORT)"; exit 2; }
	$(BIN)/pumprig --port $(PORT) flash

# Reports: JUnit XML and an HTML page with per-test logs and plots, in $(OUT)/hil.
hil: venv
	$(BIN)/pytest -q hil -n $(RIGS) --rig sim --junitxml=$(OUT)/hil/junit.xml --hil-report $(OUT)/hil

bench: venv
	$(PY) bench/run_all.py

# both run even when the first fails (each writes its figures); the target fails if either did
campaign: venv
	$(PY) bench/campaign.py; a=$$?; PUMPRIG_LONG=1 $(PY) bench/safety_machine.py; b=$$?; \
	$(PY) bench/campaign_flash.py --cuts 50; c=$$?; \
	$(PY) bench/campaign_flash.py --commit-cuts 20 --seed 2; d=$$?; \
	test $$a = 0 && test $$b = 0 && test $$c = 0 && test $$d = 0

clean:
	rm -rf $(VENV) $(FARM_VENV) $(OUT) .pytest_cache .ruff_cache .mypy_cache
