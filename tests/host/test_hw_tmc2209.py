"""hw/tmc2209.py: the TMC2209's single-wire UART, against an emulated driver.

The CRC8 is checked against values published independently of this code (the CRC of the sync
byte and each node address, and of a read request for GCONF); the datagram layout against the
datasheet's byte order; configure() against the virtual rig's driver, which counts the writes
it accepts in IFCNT, and a single wire that echoes every byte.
"""

import sys
from pathlib import Path

BOARD = Path(__file__).resolve().parents[2] / "board"
if str(BOARD) not in sys.path:
    sys.path.insert(0, str(BOARD))

from hw import common, tmc2209  # noqa: E402
from pumprig.virtual import driver  # noqa: E402
from test_hw_common import PICO, board, fake_parts  # noqa: E402


class EmulatedTMC2209:
    """A UART wired to PDN_UART of the virtual rig's driver (pumprig.virtual.driver): what is
    written is read back (the echo), then the driver's replies to valid read requests; valid
    writes to this node update its registers and IFCNT."""

    def __init__(self, node=0, answers=True, corrupt=False):
        self.node = node
        self.answers = answers
        self.corrupt = corrupt
        self.regs = dict(driver.DRV_POWER_ON)
        self.rx = b""

    def any(self):
        return len(self.rx)

    def read(self, n=None):
        n = len(self.rx) if n is None else n
        got, self.rx = self.rx[:n], self.rx[n:]
        return got or None

    def write(self, data):
        data = bytes(data)
        self.rx += data  # the echo on the single wire
        if self.answers:
            reply = bytearray(driver.driver_hears(self.regs, data, self.node))
            if self.corrupt and reply:
                reply[5] ^= 0x10
            self.rx += bytes(reply)


def test_crc8_matches_published_values():
    assert [tmc2209.crc8(bytes([0x05, n]), 2) for n in (0, 1, 2, 3, 0xFF)] == \
        [0x18, 0x91, 0xDF, 0x56, 0xEB]
    assert tmc2209.read_request(0, tmc2209.GCONF) == bytes([0x05, 0x00, 0x00, 0x48])


def test_write_datagram_layout():
    d = tmc2209.write_datagram(3, tmc2209.TCOOLTHRS, 0xFFFFF)
    assert d[:7] == bytes([0x05, 0x03, 0x94, 0x00, 0x0F, 0xFF, 0xFF])
    assert d[7] == tmc2209.crc8(d, 7) and len(d) == 8


def test_configure_writes_stallguard_and_checks_ifcnt():
    drv = EmulatedTMC2209(node=2)
    assert tmc2209.configure(drv, 2, 20, 0xFFFFF) is True
    assert drv.regs[tmc2209.SGTHRS] == 20 and drv.regs[tmc2209.TCOOLTHRS] == 0xFFFFF
    assert drv.regs[tmc2209.GCONF] == tmc2209.GCONF_VALUE
    assert drv.regs[tmc2209.GCONF] & (1 << 6) and not drv.regs[tmc2209.GCONF] & (1 << 7)
    assert drv.regs[tmc2209.IFCNT] == 3  # three writes accepted
    assert tmc2209.read(drv, 2, tmc2209.GCONF) == tmc2209.GCONF_VALUE  # SGTHRS is write-only


def test_configure_reports_a_silent_wrong_or_noisy_driver():
    assert tmc2209.configure(EmulatedTMC2209(answers=False), 0, 20, 0xFFFFF) is False
    assert tmc2209.configure(EmulatedTMC2209(node=1), 0, 20, 0xFFFFF) is False  # other node
    assert tmc2209.configure(EmulatedTMC2209(corrupt=True), 0, 20, 0xFFFFF) is False
    assert tmc2209.parse_reply(b"\x05\xff\x02\x00\x00\x00\x07\x00", 2) is None  # bad CRC


def _board(microstep, drv):
    parts = fake_parts()
    if drv is not None:
        parts["driver_uart"] = drv
    return board(parts, config=dict(PICO, microstep=microstep))[0]


def test_the_board_configures_the_driver_at_the_address_of_its_microstep_pins():
    for microstep, node in ((8, 0), (16, 3), (32, 1), (64, 2)):
        drv = EmulatedTMC2209(node=node)
        b = _board(microstep, drv)
        assert b.stall_detect == "stallguard", microstep
        assert drv.regs[tmc2209.SGTHRS] == PICO["driver_uart"]["sgthrs"]
        ms1, ms2 = common.MICROSTEP_PINS[microstep]
        assert node == ms1 | ms2 << 1
    assert _board(8, EmulatedTMC2209(answers=False)).stall_detect == "no answer"
    parts = fake_parts()
    parts["driver_uart"] = EmulatedTMC2209()
    b = board(parts, config=dict(PICO, driver_uart=dict(PICO["driver_uart"], sgthrs=0)))[0]
    assert b.stall_detect == "off"  # confirmed, but SGTHRS 0 keeps stall reporting off
    assert "driver_uart" not in parts  # power-on only: the board does not keep the UART
    assert _board(8, None).stall_detect is None
