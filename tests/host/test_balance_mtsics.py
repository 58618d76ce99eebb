"""The virtual balance answers the MT-SICS level 0 inquiries I0, I1 and I3 (issue 14: it
answered ES, and a third-party MT-SICS client asks for them at connect)."""

import re

import serial
from pumprig.virtual.balance import VirtualBalance, serve_on_pty

QUOTED = r'"([^"]*)"'


def _lines(reply):
    assert reply.endswith(b"\r\n")
    return reply.decode("ascii").split("\r\n")[:-1]


def test_i0_lists_every_command_it_answers_b_lines_then_a():
    """I0: one `I0 B <level> "<cmd>"` line per command, the last one `I0 A`; every command
    listed is answered (not ES), and one that is not listed is ES."""
    vb = VirtualBalance(noise_ug=0)
    lines = _lines(vb.respond(b"I0", 0, 0))
    assert len(lines) >= 8
    parsed = [re.fullmatch(r'I0 ([AB]) ([0-3]) ' + QUOTED, ln) for ln in lines]
    assert all(parsed), lines
    assert [m.group(1) for m in parsed] == ["B"] * (len(lines) - 1) + ["A"]
    listed = {m.group(3): int(m.group(2)) for m in parsed}
    for cmd in ("@", "I0", "I1", "I2", "I3", "I4", "S", "SI", "Z"):
        assert listed.get(cmd) == 0, cmd
    assert listed["T"] == 1 and listed["TA"] == 1
    for cmd in listed:
        assert not vb.respond(cmd.encode(), 0, 0).startswith(b"ES"), cmd
    assert "SIR" not in listed and vb.respond(b"SIR", 0, 0) == b"ES\r\n"


def test_i1_levels_and_versions():
    """I1 A "<levels fully implemented>" "<v0>" "<v1>" "<v2>" "<v3>"."""
    (line,) = _lines(VirtualBalance().respond(b"I1", 0, 0))
    m = re.fullmatch(r"I1 A " + " ".join([QUOTED] * 5), line)
    assert m, line
    assert m.group(1) == ""                 # level 0 is not complete (no SIR, no ZI)
    assert m.group(2) and m.group(3)        # levels 0 and 1: implemented in part, versioned
    assert m.group(4) == m.group(5) == ""


def test_i3_software_version():
    (line,) = _lines(VirtualBalance().respond(b"I3", 0, 0))
    assert re.fullmatch(r"I3 A " + QUOTED, line) and line != 'I3 A ""'


def test_a_client_reads_the_whole_i0_list_on_the_pty():
    """Through the pseudo-terminal, as a client reads it: lines until the A line, then the
    next command's reply is its own (nothing of the list left over)."""
    path, stop = serve_on_pty(lambda: 1_000_000, VirtualBalance(noise_ug=0))
    try:
        with serial.serial_for_url(path, timeout=5) as s:
            s.write(b"I0\r\n")
            got = []
            while True:
                ln = s.readline()
                assert ln, "the list ended without an A line"
                got.append(ln)
                if ln.startswith(b"I0 A"):
                    break
            assert len(got) >= 8
            s.write(b"I4\r\n")
            assert s.readline().startswith(b'I4 A "')
    finally:
        stop()
