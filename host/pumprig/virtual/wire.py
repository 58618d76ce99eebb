"""The wire between the virtual board and the world: two pipes (fd 3 world->board, fd 4
board->world), one ASCII line each, an op letter and space-separated integers (the protocol is
in pumprig/virtual/world.py's docstring). World->board lines are framed (`frame`: a length
byte first).

`Wire` owns the pipes of one interpreter run: it reads the board's lines and writes the world's
answers; a write to a board that has gone is dropped.
"""

import os


def t_line(now_ms, warp, serial, inputs=()):
    """'T <now_ms> <frozen> <serial> [i<pin>:<v> a<pin>:<u16> ...]': frozen=1 in warp mode;
    serial=1 when host bytes woke the board. inputs: (kind, pin, value) for the tail, carried
    in warp mode only (they cannot change while time stands still)."""
    head = b"T %d %d %d" % (now_ms, 1 if warp else 0, 1 if serial else 0)
    if not warp:
        return head + b"\n"
    tail = b""
    for kind, pin, value in inputs:
        tail += b" %s%d:%d" % (kind, pin, value)
    return head + tail + b"\n"


def frame(line):
    """A world->board line as it goes on the pipe: a byte 0x80 + its length, then the line
    (ASCII). The board reads it with two reads (the unix port's readline makes a system call
    per byte: some 80 µs for an answer with inputs, against 9 µs); after a Ctrl-C cut a read
    short, the byte with its top bit set shows where the next line starts."""
    if len(line) > 127:
        raise ValueError("a world->board line is at most 127 bytes")
    return bytes((0x80 | len(line),)) + line


def parse(line):
    """(op, args) of a board line: op a bytes letter; args the integers, or for 'U' the
    bytes written (hex on the wire). (None, None) for an empty line."""
    parts = line.split()
    if not parts:
        return None, None
    op = parts[0]
    if op == b"U":
        return op, bytes.fromhex(parts[1].decode()) if len(parts) > 1 else b""
    return op, [int(p) for p in parts[1:]]


class Wire:
    def __init__(self):
        self.to_board = None        # fd we write answers to
        self.from_board = None      # fd we read requests from
        self._rbuf = b""

    @property
    def attached(self):
        return self.to_board is not None

    def attach(self, to_board, from_board):
        self.to_board = to_board
        self.from_board = from_board
        if from_board is not None:
            # non-blocking: a warp burst may already have read what select() reported
            os.set_blocking(from_board, False)
        self._rbuf = b""

    def detach(self):
        self.to_board = None
        self.from_board = None

    def send(self, line):
        """One answer line (ending in \n, at most 127 bytes) to the board, framed."""
        if self.to_board is None:
            return
        try:
            os.write(self.to_board, frame(line))
        except OSError:
            pass

    def read(self):
        """Read what the board sent into the buffer. Returns False on EOF."""
        try:
            data = os.read(self.from_board, 65536)
        except BlockingIOError:
            return True  # already consumed by a warp burst: nothing new
        except (OSError, TypeError):
            return False
        if not data:
            return False
        self._rbuf += data
        return True

    def next_line(self):
        """The next complete line read (without its newline), or None."""
        i = self._rbuf.find(b"\n")
        if i < 0:
            return None
        line = self._rbuf[:i]
        self._rbuf = self._rbuf[i + 1:]
        return line
