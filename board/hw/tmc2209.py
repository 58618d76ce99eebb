"""TMC2209 over its single-wire UART (PDN_UART): turn on StallGuard stall reporting on DIAG.

Datagrams (TMC2209 datasheet, UART interface), bytes in order, data MSB first:
    write          0x05, node, register | 0x80, d31..24, d23..16, d15..8, d7..0, CRC8
    read request   0x05, node, register, CRC8
    read reply     0x05, 0xFF, register, d31..24, d23..16, d15..8, d7..0, CRC8
CRC8: polynomial x^8 + x^2 + x + 1, each byte fed LSB first (the datasheet's algorithm).
The board's TX reaches PDN_UART through 1 kOhm and its RX is wired to PDN_UART, so every byte
sent is received back too (the echo) before the driver's reply. The node address is MS1 (bit 0)
and MS2 (bit 1), the pins that select microsteps: the address follows the microstep setting.
IFCNT counts the write datagrams the driver accepted: reading it before and after the writes
confirms them.

Power-on only: imported while the Board is made and dropped after (main.py).
"""

SYNC = 0x05
REPLY_NODE = 0xFF
GCONF = 0x00
IFCNT = 0x02
TCOOLTHRS = 0x14
SGTHRS = 0x40
# GCONF: I_scale_analog (bit 0, current from VREF, as standalone), pdn_disable (bit 6: the pin is
# the UART, not standby control), multistep_filt (bit 8, the power-on default). mstep_reg_select
# (bit 7) stays 0: MS1/MS2 keep selecting microsteps. en_spreadCycle (bit 2) stays 0: StallGuard4
# works in StealthChop only.
GCONF_VALUE = 0x141


def crc8(data, n):
    """CRC8 of the first n bytes of data (TMC2209 datasheet)."""
    crc = 0
    for i in range(n):
        b = data[i]
        for _ in range(8):
            if ((crc >> 7) ^ (b & 1)) & 1:
                crc = ((crc << 1) ^ 0x07) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
            b >>= 1
    return crc


def write_datagram(node, reg, value):
    d = bytearray(8)
    d[0] = SYNC
    d[1] = node
    d[2] = reg | 0x80
    d[3] = (value >> 24) & 0xFF
    d[4] = (value >> 16) & 0xFF
    d[5] = (value >> 8) & 0xFF
    d[6] = value & 0xFF
    d[7] = crc8(d, 7)
    return bytes(d)


def read_request(node, reg):
    d = bytearray(4)
    d[0] = SYNC
    d[1] = node
    d[2] = reg
    d[3] = crc8(d, 3)
    return bytes(d)


def parse_reply(reply, reg):
    """The register value in an 8-byte read reply, or None if it is not a valid reply."""
    if reply is None or len(reply) != 8 or reply[0] != SYNC or reply[1] != REPLY_NODE:
        return None
    if reply[2] != reg or reply[7] != crc8(reply, 7):
        return None
    return (reply[3] << 24) | (reply[4] << 16) | (reply[5] << 8) | reply[6]


def _drain(uart):
    while uart.any():
        uart.read()


def read(uart, node, reg):
    """A register's value, or None (no reply, a damaged reply). The UART was opened with a
    read timeout: the reply follows the request after the driver's SENDDELAY (8 bit times)."""
    _drain(uart)
    req = read_request(node, reg)
    uart.write(req)
    got = uart.read(12)  # the echo of the 4-byte request, then the 8-byte reply
    if got is None or len(got) < 12 or bytes(got[:4]) != req:
        return None
    return parse_reply(bytes(got[4:12]), reg)


def configure(uart, node, sgthrs, tcoolthrs):
    """Write GCONF, TCOOLTHRS and SGTHRS; True when IFCNT shows the driver took all three.
    DIAG then goes high on a stall (SG_RESULT <= 2 x SGTHRS while TSTEP <= TCOOLTHRS)."""
    before = read(uart, node, IFCNT)
    if before is None:
        return False
    for reg, value in ((GCONF, GCONF_VALUE), (TCOOLTHRS, tcoolthrs & 0xFFFFF),
                       (SGTHRS, sgthrs & 0xFF)):
        uart.write(write_datagram(node, reg, value))
        uart.read(8)  # the echo
    after = read(uart, node, IFCNT)
    return after is not None and after == (before + 3) & 0xFF
