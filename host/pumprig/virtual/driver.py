"""The virtual rig's stepper driver: a TMC2209 on the board's UART (datasheet, UART interface).

A UART the board opens on the driver's pins (config "driver_uart": {"tx", "rx"}) reaches
PDN_UART, so every byte written comes back (the echo), then the driver's reply to a valid read
request for its node (MS1 + 2 * MS2 as the pins are driven). Valid write datagrams set the
register and count in IFCNT (mod 256); a bad sync, node or CRC is ignored, as the driver does.
Each write() is one burst on the wire: the bus idles between them (the driver drops a partial
datagram there). The registers keep their values across resets of the board and return to
their power-on values at a power cut. DIAG reports a stall only when StallGuard is set up
(SGTHRS and TCOOLTHRS non-zero, GCONF pdn_disable set, en_spreadCycle clear); without
"driver_uart" in the config there is no UART to emulate and DIAG reports every stall.
"""

# TMC2209 registers (datasheet): the power-on values of those the emulation keeps, their widths
DRV_GCONF, DRV_GSTAT, DRV_IFCNT, DRV_TCOOLTHRS, DRV_SGTHRS = 0x00, 0x01, 0x02, 0x14, 0x40
DRV_POWER_ON = {DRV_GCONF: 0x101, DRV_GSTAT: 0x1, DRV_IFCNT: 0, DRV_TCOOLTHRS: 0, DRV_SGTHRS: 0}
DRV_WRITABLE = {DRV_GCONF: 0x3FF, DRV_GSTAT: 0x7, DRV_TCOOLTHRS: 0xFFFFF, DRV_SGTHRS: 0xFF}
DRV_READABLE = (DRV_GCONF, DRV_GSTAT, DRV_IFCNT)    # TCOOLTHRS and SGTHRS are write-only
DRV_NAMES = {DRV_GCONF: "GCONF", DRV_GSTAT: "GSTAT", DRV_IFCNT: "IFCNT",
             DRV_TCOOLTHRS: "TCOOLTHRS", DRV_SGTHRS: "SGTHRS"}
GCONF_SPREADCYCLE = 0x04
GCONF_PDN_DISABLE = 0x40


def tmc_crc8(data):
    """The TMC2209's CRC8: x^8 + x^2 + x + 1, each byte fed LSB first."""
    crc = 0
    for b in data:
        for _ in range(8):
            if ((crc >> 7) ^ b) & 1:
                crc = ((crc << 1) ^ 0x07) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
            b >>= 1
    return crc


def driver_hears(regs, data, node):
    """What a TMC2209 with registers `regs` does with bytes on its UART: valid writes to this
    node set the register (masked to its width; GSTAT: write 1 to clear) and count in IFCNT;
    valid read requests are answered (write-only registers read 0). Returns the replies. A
    byte that does not start a valid datagram ends the bytes it looks at (the driver waits for
    the bus to idle)."""
    out = b""
    i = 0
    while len(data) - i >= 4:
        d = data[i:i + 8] if data[i + 2] & 0x80 else data[i:i + 4]
        if len(d) < (8 if data[i + 2] & 0x80 else 4) or d[0] & 0x0F != 0x05 or \
                d[-1] != tmc_crc8(d[:-1]):
            break
        i += len(d)
        if d[1] != node:
            continue
        reg = d[2] & 0x7F
        if len(d) == 8:
            if reg in DRV_WRITABLE:
                v = int.from_bytes(d[3:7], "big") & DRV_WRITABLE[reg]
                if reg == DRV_GSTAT:
                    v = regs[reg] & ~v
                regs[reg] = v
            regs[DRV_IFCNT] = (regs[DRV_IFCNT] + 1) & 0xFF
        else:
            v = regs.get(reg, 0) if reg in DRV_READABLE else 0
            reply = bytes((0x05, 0xFF, reg)) + v.to_bytes(4, "big")
            out += reply + bytes((tmc_crc8(reply),))
    return out


class Driver:
    """The driver's registers and the board's UART to it."""

    def __init__(self, config):
        du = config.get("driver_uart")
        self.pins = (du.get("tx"), du.get("rx")) if isinstance(du, dict) else None
        self.wired = False      # the board's UART is open on the driver's pins
        self.rx = bytearray()   # what the board's UART has received and not read
        self.regs = dict(DRV_POWER_ON)

    def open_uart(self, tx, rx):
        self.wired = self.pins is not None and (tx, rx) == self.pins
        self.rx = bytearray()

    def board_reset(self):
        """The board reset: its UART is closed; the driver keeps its registers."""
        self.wired = False
        self.rx = bytearray()

    def power_cut(self):
        self.regs = dict(DRV_POWER_ON)

    def write(self, data, node):
        """Bytes the board's UART sent: on the driver's pins, the echo and the driver's reply."""
        if not self.wired:
            return
        self.rx += data
        self.rx += driver_hears(self.regs, data, node)

    def read(self, n):
        """Up to n received bytes (all if n < 0)."""
        n = len(self.rx) if n < 0 else min(n, len(self.rx))
        got = bytes(self.rx[:n])
        del self.rx[:n]
        return got

    def stallguard(self):
        """DIAG reports a stall: StallGuard set up over the UART, or no driver UART at all."""
        if self.pins is None:
            return True
        r = self.regs
        return bool(r[DRV_SGTHRS] and r[DRV_TCOOLTHRS] and r[DRV_GCONF] & GCONF_PDN_DISABLE
                    and not r[DRV_GCONF] & GCONF_SPREADCYCLE)

    def status(self):
        """The registers by name (None: the rig has no driver UART)."""
        if self.pins is None:
            return None
        return {DRV_NAMES[k]: v for k, v in sorted(self.regs.items())}
