"""Raspberry Pi Pico (RP2040): step pulses from a PIO state machine, the rest from hw.common.

The program (``step_program``) is the one documented and hand-encoded in hw/pio_step.py; the
host test tests/host/test_pio.py checks that both forms are the same instructions and runs the
encoded form in an emulator. No Python interrupt handler is involved: the program pushes one
word into the RX FIFO when a segment is finished and ``motor_busy`` polls the FIFO level, so
nothing runs in interrupt context and nothing can allocate there.
"""

import machine
import rp2
from hw import common, pio_step
from pumpcore import const

TYPE_CHECKING = False
if TYPE_CHECKING:  # names the asm_pio decorator provides while it assembles
    from rp2.asm_pio import block, jmp, label, mov, not_x, osr, push, x_dec, y, y_dec

_SM_ID = const(0)  # PIO0, state machine 0
_WDT_MAX_MS = const(8388)  # RP2040 watchdog limit


@rp2.asm_pio(sideset_init=rp2.PIO.OUT_LOW)
def step_program():
    # Keep in step with pio_step.PROGRAM (checked by tests/host/test_pio.py).
    # The delay [4] is pio_step.PULSE_US - 1: asm_pio runs this body with its own globals.
    label("gap")
    jmp(y_dec, "gap").side(0)
    jmp(x_dec, "high").side(1)[4]
    label("high")
    mov(y, osr).side(0)
    jmp(not_x, "done").side(0)
    jmp("gap").side(0)
    label("done")
    push(block).side(0)
    label("idle")
    jmp("idle").side(0)


class RP2Board(common.CommonBoard):
    """Board on a Pico: STEP from PIO0 SM0 at 1 MHz (1 cycle = 1 µs)."""

    _HW_MAX_US = 1_000_000_000  # fits X/Y as a small int (pio_step.MAX_REG)

    def __init__(self, config, machine_module, parts, sm, io=None, clock=None):
        self._sm = sm
        self._count = 0
        common.CommonBoard.__init__(self, config, machine_module, parts, io, clock)

    def _drain(self):
        n = 0
        while self._sm.rx_fifo():
            self._sm.get()
            n += 1
        return n

    def _hw_start(self, count, first_us, interval_us):
        x, first_y, interval_y = pio_step.segment_words(count, first_us, interval_us)
        sm = self._sm
        sm.active(0)
        self._drain()
        sm.restart()  # clears shift counters and delay, back to the program start
        sm.put(x)
        sm.exec(pio_step.EXEC_PULL)
        sm.exec(pio_step.EXEC_MOV_X_OSR)
        sm.put(first_y)
        sm.exec(pio_step.EXEC_PULL)
        sm.exec(pio_step.EXEC_MOV_Y_OSR)
        sm.put(interval_y)
        sm.exec(pio_step.EXEC_PULL)  # OSR keeps the gap reload value for the whole segment
        self._count = count
        # DIR was set by motor_start before this; the puts and execs above take far longer
        # than the 20 ns DIR-to-STEP setup, and the first edge is at least 1 µs later still.
        sm.active(1)

    def _hw_busy(self):
        return self._sm.rx_fifo() == 0

    def _hw_stop(self):
        sm = self._sm
        sm.active(0)
        if self._drain():  # the done word: the whole segment was made
            made = self._count
        else:
            sm.exec(pio_step.EXEC_MOV_ISR_X)
            sm.exec(pio_step.EXEC_PUSH)
            made = pio_step.pulses_made(self._count, sm.get())
        sm.exec(pio_step.EXEC_STEP_LOW)  # an aborted pulse must not leave STEP high
        self._count = 0
        return made


def make_state_machine(config):
    step = machine.Pin(config["pins"]["step"], machine.Pin.OUT, value=0)
    return rp2.StateMachine(
        _SM_ID, step_program, freq=pio_step.SM_FREQ_HZ, sideset_base=step
    )


def make_board(config):
    """The Board for a Pico wired as boards/pico.json (docs/wiring.md)."""
    from hw import setup  # power-on only: main.py drops it once the pump runs

    if config.get("watchdog_ms", 0) > _WDT_MAX_MS:
        config = dict(config)
        config["watchdog_ms"] = _WDT_MAX_MS
    parts = setup.build_parts(config, machine)
    return RP2Board(config, machine, parts, make_state_machine(config))
