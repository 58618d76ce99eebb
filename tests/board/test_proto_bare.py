"""The resident fast path of the decoder (proto.decode_bare) for requests with no arguments,
the signed `status` above all (issue 12: the status round trip at or under 1.5 ms). Loading
pumpcore.parse for every `status`, then dropping it and collecting, cost about 0.3 ms of the
firmware's time per request on the unix port (docs/benchmarks.md, `session`). The fast path must
answer exactly as parse.decode does for every line it accepts, and leave every other line to it.
Runs under CPython and MicroPython.
"""

import sys

from _util import ClientSession, forget_module
from pumpcore import parse, proto


def _lines():
    cs = ClientSession()
    from pumpcore import auth

    cs.pad = auth.pads(bytes(range(32)))
    out = []
    for rid, cmd, args in (("s1", "status", {}), ("h1a2b3-17", "clock.get", {}),
                           ("Z_9", "alarms", {}), ("a" * 24, "x" * 32, {}),
                           ("l1", "log", {"since": 0, "limit": 50}),
                           ("l2", "log", {"since": 407, "limit": 1}),
                           ("r1", "refill", {"volume_nl": 19_000_000}),
                           ("r2", "refill", {"volume_nl": 20_000_000, "conc_ng_ml": 500_000}),
                           ("c1", "clock.set", {"epoch_s": 1_767_225_600, "offset_s": 3600})):
        out.append(proto.encode_request(rid, cmd, args))
        out.append(cs.line(rid, cmd, args))
        out.append(cs.line(rid, cmd, args, seq=987654321))
    return out


def _same(line):
    """decode_bare(line) is None or the Frame parse.decode makes of it."""
    f = proto.decode_bare(line)
    if f is None:
        return False
    t = parse.decode(line)
    assert t[4] is None, (line, t)
    assert (f.kind, f.id, f.name, f.body, f.error, f.message, f.crc) == t[:7], line
    assert (f.seq, f.mac_at) == ((t[7], t[8]) if t[7] is not None else (None, 0)), line
    return True


def test_the_common_requests_take_the_fast_path():
    for line in _lines():
        assert _same(line), line
        assert _same(line[:-1]), line  # no newline
        assert _same(line[:-1] + b"\r\n"), line


def test_the_fast_path_loads_no_decoder():
    """Fails on the code before it: proto.decode imported pumpcore.parse for every line."""
    line = _lines()[1]  # a signed status
    forget_module("pumpcore.parse")
    f = proto.decode(line)
    assert f.error is None and f.name == "status" and f.seq == 1
    assert "pumpcore.parse" not in sys.modules


def test_every_one_byte_change_is_judged_as_the_decoder_judges_it():
    """Every byte of each line replaced by each of a set of likely bytes: whatever the fast
    path accepts, parse.decode accepts with the same fields; what it refuses it leaves to
    parse.decode (proto.decode's answer is then parse's)."""
    subs = b"@ {}|*0159afAFZz-_.:\"\x00\x7f\xff\n"
    accepted = refused = 0
    for line in _lines():
        for i in range(len(line) - 1):
            for b in subs:
                if line[i] == b:
                    continue
                bad = line[:i] + bytes((b,)) + line[i + 1 :]
                if _same(bad):
                    accepted += 1
                else:
                    refused += 1
                    f = proto.decode(bad)
                    t = parse.decode(bad)
                    assert (f.kind, f.id, f.name, f.body, f.error, f.message) == t[:6], bad
    assert refused > 1000 and accepted == 0  # a one-byte change breaks the CRC or the form


def test_changed_lines_with_a_good_crc():
    """Lines built with a correct CRC around parts the fast path must refuse or accept
    exactly as parse.decode does: ids and names at and past their limits, sequence numbers
    with a leading zero or too many digits, a MAC of the wrong length or case, arguments."""
    from binascii import crc32

    def framed(text):
        data = text.encode()
        return data + b"*%08x\n" % (crc32(data) & 0xFFFFFFFF)

    mac = "0123456789abcdef" * 2
    texts = [
        "@a status {}", "@" + "a" * 24 + " status {}", "@" + "a" * 25 + " status {}",
        "@a " + "s" * 32 + " {}", "@a " + "s" * 33 + " {}", "@a Status {}", "@a st-x {}",
        "@ status {}", "@a  status {}", "@a status  {}", "@a status { }", "@a status {} ",
        "@a status {\"x\":1}", "@a status {}|1|" + mac, "@a status {}|0|" + mac,
        "@a status {}|01|" + mac, "@a status {}|123456789|" + mac,
        "@a status {}|1234567890|" + mac, "@a status {}||" + mac,
        "@a status {}|1|" + mac[:-1], "@a status {}|1|" + mac + "0",
        "@a status {}|1|" + mac.upper(), "@a status {}|1|" + mac[:-1] + "g",
        "@a status {}|1" + mac, "@a status {}1|" + mac, "=a ok {}", "!1 x {}",
        "@a status {}|1|" + mac + "|2|" + mac, "@a status|1|" + mac,
        # integer arguments (the fast path takes `"key":digits` pairs with no spaces)
        "@a log {\"limit\":50,\"since\":0}", "@a log {\"since\":0}|1|" + mac,
        "@a log {\"since\":1,\"since\":2}", "@a log {\"a_9\":123456789012345678}",
        "@a log {\"a\":1234567890123456789}", "@a log {\"a\":01}", "@a log {\"a\":00}",
        "@a log {\"a\":-1}", "@a log {\"a\":-0}", "@a log {\"a\":1.5}", "@a log {\"a\":1e3}",
        "@a log {\"a\": 1}", "@a log {\"a\":1 }", "@a log { \"a\":1}", "@a log {\"a\" :1}",
        "@a log {\"a\":1,}", "@a log {\"a\":1,,\"b\":2}", "@a log {,\"a\":1}",
        "@a log {\"\":1}", "@a log {\"A\":1}", "@a log {\"a-b\":1}", "@a log {\"a\\n\":1}",
        "@a log {\"a\":\"1\"}", "@a log {\"a\":true}", "@a log {\"a\":null}",
        "@a log {\"a\":[1]}", "@a log {\"a\":{\"b\":1}}", "@a log {\"a\":}", "@a log {\"a\"}",
        "@a log {\"a\":1", "@a log {\"a\":1}}", "@a log {\"a\":1}x", "@a log {a:1}",
        "@a log {\"a\":1}|1|" + mac[:-1], "@a log {\"a\":1}|01|" + mac,
    ]
    fast = 0
    for text in texts:
        line = framed(text)
        if _same(line):
            fast += 1
        else:
            f = proto.decode(line)
            t = parse.decode(line)
            assert (f.kind, f.id, f.name, f.body, f.error, f.message, f.crc) == t[:7], text
    # the three plain ones within the limits, two good signed ones, {"x":1}, and of the
    # integer arguments: two pairs, a signed one, a repeated key, 18 digits
    assert fast == 10


def test_a_log_page_and_a_refill_load_no_decoder():
    """A request with integer arguments is decoded resident (issue 11, finding 8: paging the
    log after a power cut in a 128 KB heap answered `undecodable (MemoryError)`: loading
    pumpcore.parse, the largest module a request loads, found no room). Fails on the code
    before it: only `{}` took the fast path."""
    cs = ClientSession()
    from pumpcore import auth

    cs.pad = auth.pads(bytes(range(32)))
    for cmd, args in (("log", {"since": 12, "limit": 50}), ("refill", {"volume_nl": 19_000_000})):
        for line in (proto.encode_request("q1", cmd, args), cs.line("q1", cmd, args)):
            forget_module("pumpcore.parse")
            f = proto.decode(line)
            assert f.error is None and f.name == cmd and f.body == args, line
            assert "pumpcore.parse" not in sys.modules, line


def test_a_signed_status_loads_no_module():
    """The whole hot path of `status` is resident: on the virtual rig each signed status
    loaded pumpcore.parse (the decoder), pumpcore.clinician (the command) and
    pumpcore.reservoirfill (the time to LOW), then dropped them and collected (about 1 ms of a
    2.2 ms round trip, docs/benchmarks.md `session`). Fails on the code before: any of the
    three is imported again by the step."""
    from _util import login, rmtree, tmpdir
    from fakeboard import FakeBoard
    from pumpcore.app import App

    root = tmpdir()
    try:
        b = FakeBoard(root=root + "/")
        key = "11" * 32
        app = App(b, keys={"clinician": key, "patient": key})
        app.call("clock.set", {"epoch_s": 1798761600, "offset_s": 0}, "clinician", "c", 0)
        app.call("refill", {"volume_nl": 20_000_000}, "clinician", "f", 0)
        plan = {"drug": "baclofen", "conc_ng_ml": 2_000_000, "catheter_nl": 100_000,
                "basal": {"kind": "continuous", "ng_day": 400_000}}
        app.call("plan.set", {"plan": plan}, "clinician", "p", 0)
        cs = login(app, key, "patient", now_ms=1000)
        line = cs.line("st1", "status", {})
        names = ("pumpcore.parse", "pumpcore.clinician", "pumpcore.reservoirfill", "pumpcore.auth")
        for name in names:
            forget_module(name)
        b.rx = line
        app.step(2000)
        for name in names:
            assert name not in sys.modules, name
        out = [x for x in b.tx.split(b"\n") if x.startswith(b"=st1 ")]
        assert len(out) == 1, b.tx
        st = proto.decode(out[0]).body
        assert st["therapy"] == "running" and st["low_epoch_s"] > 1798761600, st
        # the time to LOW as reservoirfill.seconds_to gives it (loaded here)
        from pumpcore import reservoirfill

        s = reservoirfill.seconds_to(app.reservoir, app.reservoir.low_nl, st["rate_nl_day"])
        assert st["low_epoch_s"] == st["epoch_s"] + s
    finally:
        rmtree(root)
