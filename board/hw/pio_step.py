"""The RP2040 step-pulse PIO program as encoded 16-bit words, and its segment arithmetic.

Why two forms of one program: the board loads the program through ``rp2.asm_pio`` (hw/rp2.py,
``step_program``), which only exists inside the rp2 firmware. The host checks the program with
the ``rp2040-pio-emulator`` package, which runs encoded words. Rather than ship an assembler,
this module holds the same seven instructions hand-encoded (RP2040 datasheet 3.4) next to the
arithmetic that turns a segment into register values; hw/rp2.py uses the arithmetic and the
``EXEC_*`` words, and tests/host/test_pio.py checks that ``step_program`` assembles to exactly
``PROGRAM`` and runs ``PROGRAM`` in the emulator.

The state machine runs at ``SM_FREQ_HZ`` = 1 MHz, so one cycle is 1 µs. One side-set pin
(not optional) drives STEP, so each instruction carries a side-set bit and 4 delay bits.

Before the state machine is enabled, the board loads the segment with ``StateMachine.exec``
(the state machine is stopped, so nothing races): X = pulses to make, Y = first gap, OSR =
gap reload value. Then::

    0 gap:   jmp y--, gap      side 0        ; wait Y+1 cycles
    1        jmp x--, high     side 1 [4]    ; rising edge, X = pulses still to start; 5 µs high
    2 high:  mov y, osr        side 0        ; falling edge, reload the gap
    3        jmp !x, done      side 0
    4        jmp gap           side 0
    5 done:  push block        side 0        ; a word in the RX FIFO: segment finished
    6 idle:  jmp idle          side 0

Rising edge k (0-based) comes ``first_y + 1 + k * (interval_y + PULSE_US + 4)`` cycles after
the enable, so ``first_y = first_us - 1`` and ``interval_y = interval_us - MIN_INTERVAL_US``.
X is decremented in the same cycle as the rising edge, so after a stop the pulses made are
exactly ``count - X`` (``EXEC_MOV_ISR_X`` + ``EXEC_PUSH`` read X without the program's help).
"""

from pumpcore import const

SM_FREQ_HZ = const(1_000_000)  # one PIO cycle = 1 µs
PULSE_US = const(5)  # STEP high time; TMC2209 needs >= 100 ns
MIN_INTERVAL_US = const(9)  # PULSE_US + 4 loop instructions with an empty gap
MIN_FIRST_US = const(1)  # the gap loop runs at least once
MAX_REG = const(0x3FFFFFFF)  # stay a small int on the board (a 32-bit X/Y would allow 2**32-1)

_SIDE1 = const(0x1000)  # side-set bit with 1 side-set pin (bit 12)
_DELAY_SHIFT = const(8)

# JMP conditions (bits 7:5)
_ALWAYS = const(0)
_NOT_X = const(1)
_X_DEC = const(2)
_Y_DEC = const(4)


def _jmp(cond, addr, side=0, delay=0):
    return (cond << 5) | addr | (_SIDE1 if side else 0) | (delay << _DELAY_SHIFT)


# MOV destination/source codes
_MOV = const(0xA000)
_X = const(1)
_Y = const(2)
_ISR = const(6)
_OSR = const(7)

ADDR_GAP = const(0)
ADDR_HIGH = const(2)
ADDR_DONE = const(5)
ADDR_IDLE = const(6)

PROGRAM = (
    _jmp(_Y_DEC, ADDR_GAP),  # 0 gap:  jmp y--, gap      side 0
    _jmp(_X_DEC, ADDR_HIGH, 1, PULSE_US - 1),  # 1 jmp x--, high side 1 [4]
    _MOV | (_Y << 5) | _OSR,  # 2 high: mov y, osr        side 0
    _jmp(_NOT_X, ADDR_DONE),  # 3       jmp !x, done      side 0
    _jmp(_ALWAYS, ADDR_GAP),  # 4       jmp gap           side 0
    0x8020,  # 5 done: push block (ISR = 0 is the word)    side 0
    _jmp(_ALWAYS, ADDR_IDLE),  # 6 idle: jmp idle          side 0
)

# Instructions the board executes with StateMachine.exec while the machine is stopped.
# All carry side-set 0, so each one also drives STEP low.
EXEC_PULL = const(0x80A0)  # pull block
EXEC_MOV_X_OSR = const(0xA027)  # mov x, osr
EXEC_MOV_Y_OSR = const(0xA047)  # mov y, osr
EXEC_MOV_ISR_X = const(0xA0C1)  # mov isr, x
EXEC_PUSH = const(0x8000)  # push noblock
EXEC_STEP_LOW = const(0xA042)  # mov y, y (a nop) side 0: STEP low after an abort


def segment_words(count, first_us, interval_us):
    """(x, first_y, interval_y) to load for a segment; ValueError if it does not fit."""
    if count < 1 or count > MAX_REG:
        raise ValueError("count out of range")
    if first_us < 0 or first_us > MAX_REG:
        raise ValueError("first_us out of range")
    if first_us < MIN_FIRST_US:
        first_us = MIN_FIRST_US
    if count == 1 and interval_us < MIN_INTERVAL_US:
        interval_us = MIN_INTERVAL_US  # never used: no second pulse
    if interval_us < MIN_INTERVAL_US or interval_us > MAX_REG:
        raise ValueError("interval_us out of range")
    return count, first_us - MIN_FIRST_US, interval_us - MIN_INTERVAL_US


def pulses_made(count, x_left):
    """Pulses made by an aborted segment of ``count`` given the X register read back."""
    made = count - x_left
    if made < 0 or made > count:  # X wrapped or stale: cannot happen with the program above
        raise ValueError("X register out of range")
    return made
