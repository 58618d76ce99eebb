# The virtual board's machine.UART, loaded at the first `machine.UART` (machine.__getattr__):
# a board whose json has no driver_uart never pays its heap. Bytes go to the world as hex, where
# the pins the UART is opened on decide what is on the wire (the TMC2209's PDN_UART on the
# driver's wiring: the echo of what is sent, then its replies; pumprig/virtual/world.py).
# The read timeout is not waited out: the world answers at once with what the wire holds.
import _world


class UART:
    def __init__(self, id, *args, **kw):
        _world.send("u %d %d\n" % (_world.pin_id(kw.get("tx", -1)),
                                    _world.pin_id(kw.get("rx", -1))))

    def write(self, b):
        _world.send("U %s\n" % b.hex())
        return len(b)

    def read(self, *n):
        """read() what is there, read(n) up to n bytes; None if nothing came."""
        h = _world._ask("G %d\n" % (n[0] if n else -1), 72)[2:-1]   # 'H <hex>'
        return bytes.fromhex(h) if h else None

    def any(self):
        return _world.ask("Y\n", 86)                                # 'V <n>'
