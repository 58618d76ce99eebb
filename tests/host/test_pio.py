"""The RP2040 step program (board/hw/pio_step.py) run in the rp2040-pio-emulator.

The emulator runs one state machine cycle by cycle with the same encoded words the board
loads; side-set drives STEP on pin 0. The setup the board does with StateMachine.exec is run
as a tiny program first, so the EXEC_* words are exercised too.
"""

import importlib
import sys
from collections import deque
from dataclasses import replace
from pathlib import Path

import pytest

pioemu = pytest.importorskip("pioemu")

BOARD = Path(__file__).resolve().parents[2] / "board"
if str(BOARD) not in sys.path:
    sys.path.insert(0, str(BOARD))

from hw import pio_step as ps  # noqa: E402

STEP = 1  # bit mask of pin 0


def _setup_state(count, first_us, interval_us):
    """Run the exec sequence the board uses (put + pull + mov) and return the state after it."""
    x, fy, iy = ps.segment_words(count, first_us, interval_us)
    setup = [ps.EXEC_PULL, ps.EXEC_MOV_X_OSR, ps.EXEC_PULL, ps.EXEC_MOV_Y_OSR, ps.EXEC_PULL]
    state = pioemu.State(transmit_fifo=deque([x, fy, iy]))
    last = state
    for _, after in pioemu.emulate(
        setup,
        stop_when=lambda _op, s: s.clock >= len(setup),
        initial_state=state,
        side_set_count=1,
        wrap_top=len(setup) - 1,
    ):
        last = after
    assert last.x_register == x and last.y_register == fy
    assert last.output_shift_register.contents == iy
    assert not last.transmit_fifo
    # the state machine is then enabled from the program start, at cycle 0
    return replace(last, clock=0, program_counter=0, pin_values=0)


def run_segment(count, first_us, interval_us, max_cycles=None, stop_at=None):
    """Emulate one segment; return (rising edge cycles, falling edge cycles, final state)."""
    state = _setup_state(count, first_us, interval_us)
    if max_cycles is None:
        max_cycles = first_us + count * interval_us + 100
    rises, falls = [], []
    end = stop_at if stop_at is not None else max_cycles

    def stop(_op, s):
        return s.clock >= end or (stop_at is None and len(s.receive_fifo) > 0)

    final = state
    for before, after in pioemu.emulate(
        list(ps.PROGRAM),
        stop_when=stop,
        initial_state=state,
        side_set_count=1,
        side_set_base=0,
    ):
        was, now = before.pin_values & STEP, after.pin_values & STEP
        if now and not was:
            rises.append(before.clock)
        if was and not now:
            falls.append(before.clock)
        final = after
    return rises, falls, final


def test_single_pulse():
    rises, falls, final = run_segment(1, 1000, 1)
    assert rises == [1000]
    assert [f - r for r, f in zip(rises, falls, strict=True)] == [ps.PULSE_US]
    assert list(final.receive_fifo) == [0]  # done word
    assert final.x_register == 0


def test_fast_bolus_interval():
    # 200 Hz bolus: 40 pulses every 5000 µs, first right away
    rises, falls, final = run_segment(40, 0, 5000)
    assert len(rises) == 40 and len(falls) == 40
    assert rises[0] == ps.MIN_FIRST_US
    assert {b - a for a, b in zip(rises, rises[1:], strict=False)} == {5000}
    assert {f - r for r, f in zip(rises, falls, strict=True)} == {ps.PULSE_US}
    assert list(final.receive_fifo) == [0]


def test_count_40_slow_interval_scaled():
    # implant rate: 108 s between pulses, scaled down 100000x so the emulator stays fast
    # (the program's timing is linear in Y; the full 108_000_000 fits the Y register)
    rises, falls, final = run_segment(40, 540, 1_080)
    assert len(rises) == 40
    assert rises[0] == 540
    assert {b - a for a, b in zip(rises, rises[1:], strict=False)} == {1_080}
    assert {f - r for r, f in zip(rises, falls, strict=True)} == {ps.PULSE_US}
    assert list(final.receive_fifo) == [0]
    ps.segment_words(40, 54_000_000, 108_000_000)  # the real values fit


@pytest.mark.parametrize("first_us", [0, 1, 2, 7, 9, 10, 999])
def test_first_delay(first_us):
    rises, _, _ = run_segment(3, first_us, 50)
    assert rises[0] == max(first_us, ps.MIN_FIRST_US)
    assert rises[1] - rises[0] == 50 and rises[2] - rises[1] == 50


def test_minimum_interval():
    rises, falls, _ = run_segment(5, 3, ps.MIN_INTERVAL_US)
    assert {b - a for a, b in zip(rises, rises[1:], strict=False)} == {ps.MIN_INTERVAL_US}
    assert all(f < r2 for f, r2 in zip(falls, rises[1:], strict=False))  # STEP goes low between pulses
    with pytest.raises(ValueError):
        ps.segment_words(2, 0, ps.MIN_INTERVAL_US - 1)
    with pytest.raises(ValueError):
        ps.segment_words(0, 0, 100)


def test_done_only_after_last_pulse():
    rises, falls, final = run_segment(4, 10, 100)
    done_at = final.clock
    assert done_at > falls[-1] and done_at - rises[-1] < 20
    assert len(rises) == 4


@pytest.mark.parametrize("stop_at", [5, 10, 12, 14, 15, 110, 112, 311, 400])
def test_abort_count_from_x(stop_at):
    # segment: 4 pulses at 10, 110, 210, 310; stop at an arbitrary cycle, read X like the board
    rises, _, final = run_segment(4, 10, 100, stop_at=stop_at)
    made_by_edges = len(rises)
    if final.receive_fifo:
        made = 4
    else:
        made = ps.pulses_made(4, final.x_register)
    assert made == made_by_edges


def test_program_words_decode_as_documented():
    # a few spot checks of the hand encoding against the datasheet layout
    assert ps.PROGRAM[0] == 0x0080  # jmp y--, 0
    assert ps.PROGRAM[1] == 0x1442  # jmp x--, 2 side 1 [4]
    assert ps.PROGRAM[2] == 0xA047  # mov y, osr
    assert ps.PROGRAM[5] == 0x8020  # push block


def test_module_is_pure():
    mod = importlib.import_module("hw.pio_step")
    assert "machine" not in vars(mod) and "rp2" not in vars(mod)


# --- the asm_pio form in hw/rp2.py is the same program --------------------------------------


class _Instr:
    def __init__(self, kind, a, b):
        self.kind, self.a, self.b = kind, a, b
        self.side_v, self.delay_v = 0, 0

    def side(self, v):
        self.side_v = v
        return self

    def __getitem__(self, d):
        self.delay_v = d
        return self


def _fake_asm_pio(**_kw):
    """A tiny independent assembler for the instructions step_program uses (datasheet 3.4)."""

    def dec(f):
        g = f.__globals__
        labels, prog = {}, []

        def label(name):
            labels[name] = len(prog)

        def jmp(cond, target=None):
            if target is None:
                cond, target = 0, cond
            prog.append(_Instr("jmp", cond, target))
            return prog[-1]

        def mov(dest, src):
            prog.append(_Instr("mov", dest, src))
            return prog[-1]

        def push(flags):
            prog.append(_Instr("push", flags, None))
            return prog[-1]

        names = dict(label=label, jmp=jmp, mov=mov, push=push, x_dec=2, y_dec=4, not_x=1,
                     x=1, y=2, isr=6, osr=7, block=0x20)
        saved = {k: g[k] for k in names if k in g}
        g.update(names)
        try:
            f()
        finally:
            for k in names:
                g.pop(k, None)
            g.update(saved)
        words = []
        for ins in prog:
            if ins.kind == "jmp":
                w = (ins.a << 5) | labels[ins.b]
            elif ins.kind == "mov":
                w = 0xA000 | (ins.a << 5) | ins.b
            else:
                w = 0x8000 | ins.a
            words.append(w | (ins.side_v << 12) | (ins.delay_v << 8))
        return words

    return dec


class _FakeSM:
    def __init__(self):
        self.log, self.x, self.rx = [], 0, []

    def active(self, on=None):
        if on is not None:
            self.log.append(("active", on))

    def restart(self):
        self.log.append(("restart",))

    def put(self, w):
        self.log.append(("put", w))

    def exec(self, op):
        self.log.append(("exec", op))
        if op == ps.EXEC_PUSH:
            self.rx.append(self.x)

    def rx_fifo(self):
        return len(self.rx)

    def get(self):
        return self.rx.pop(0)


@pytest.fixture
def hw_rp2(monkeypatch):
    import types

    fake_rp2 = types.ModuleType("rp2")
    fake_rp2.asm_pio = _fake_asm_pio
    fake_rp2.PIO = types.SimpleNamespace(OUT_LOW=0)
    fake_rp2.StateMachine = None
    monkeypatch.setitem(sys.modules, "rp2", fake_rp2)
    monkeypatch.setitem(sys.modules, "machine", types.ModuleType("machine"))
    sys.modules.pop("hw.rp2", None)
    mod = importlib.import_module("hw.rp2")
    yield mod
    sys.modules.pop("hw.rp2", None)


def test_asm_pio_form_matches_encoded_program(hw_rp2):
    assert hw_rp2.step_program == list(ps.PROGRAM)


def _rp2_board(hw_rp2, sm):
    import json

    from test_hw_common import FakeClock, FakeIO, fake_parts

    cfg = json.loads((BOARD / "boards" / "pico.json").read_text())
    io = FakeIO()
    return hw_rp2.RP2Board(cfg, None, fake_parts(), sm, io=(io, io, io), clock=FakeClock())


def test_rp2_board_loads_segment_with_exec(hw_rp2):
    sm = _FakeSM()
    b = _rp2_board(hw_rp2, sm)
    b.motor_start(40, 1000, 5000, True)
    x, fy, iy = ps.segment_words(40, 1000, 5000)
    log = [e for e in sm.log if e[0] != "active"]
    assert log == [("restart",), ("put", x), ("exec", ps.EXEC_PULL), ("exec", ps.EXEC_MOV_X_OSR),
                   ("put", fy), ("exec", ps.EXEC_PULL), ("exec", ps.EXEC_MOV_Y_OSR),
                   ("put", iy), ("exec", ps.EXEC_PULL)]
    assert sm.log[0] == ("active", 0) and sm.log[-1] == ("active", 1)
    assert b.motor_busy()
    sm.x = 29  # 11 pulses started when stopped
    assert b.motor_stop() == 11
    assert sm.log[-1] == ("exec", ps.EXEC_STEP_LOW)
    assert not b.motor_busy()


def test_rp2_board_done_word(hw_rp2):
    sm = _FakeSM()
    b = _rp2_board(hw_rp2, sm)
    b.motor_start(3, 0, 100, False)
    sm.rx.append(0)  # pushed by the program at the end
    assert not b.motor_busy()
    assert b.motor_stop() == 0  # nothing in flight any more (the 3 were accounted as done)
