"""Frames, the strict JSON decoder and the command dictionary (CPython and MicroPython)."""

from binascii import crc32

from _util import raises
from pumpcore import proto


def _with_crc(text):
    data = text.encode()
    return data + b"*%08x\n" % (crc32(data) & 0xFFFFFFFF)


def test_worked_example_crc():
    # the example in docs/protocol.md
    assert proto.encode_request("7", "status", {}) == b"@7 status {}*cb76cfbd\n"
    assert proto.encode_ok("7", {"mode": "running"}) == b'=7 ok {"mode":"running"}*b2ad3885\n'


def test_round_trip_request():
    line = proto.encode_request("h1-42", "refill", {"volume_nl": 20000000, "conc_ng_ml": 2000000})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    f = proto.decode(line)
    assert f.error is None
    assert f.kind == proto.REQUEST and f.id == "h1-42" and f.name == "refill"
    assert f.body == {"volume_nl": 20000000, "conc_ng_ml": 2000000}
    assert f.crc == line[-9:-1].decode()


def test_round_trip_response_event():
    f = proto.decode(proto.encode_ok("a", {"alarms": ["LOW"], "x": None, "t": True, "n": -3}))
    assert (f.kind, f.id, f.name) == ("=", "a", "ok")
    assert f.body == {"alarms": ["LOW"], "x": None, "t": True, "n": -3}
    f = proto.decode(proto.encode_err("a", proto.LOCKOUT, "wait"))
    assert f.name == "err" and f.body == {"code": "LOCKOUT", "message": "wait"}
    f = proto.decode(proto.encode_event(12, "alarm.raised", {"kind": "EMPTY"}))
    assert (f.kind, f.id, f.name, f.body) == ("!", "12", "alarm.raised", {"kind": "EMPTY"})


def test_non_ascii_is_escaped():
    line = proto.encode_ok("a", {"drug": "m\u00e9t\u2013x"})
    for b in line[:-1]:
        assert 32 <= b <= 126
    assert proto.decode(line).body == {"drug": "m\u00e9t\u2013x"}


def test_crc_and_trailer_errors():
    line = bytearray(proto.encode_request("abc", "status", {}))
    line[1] = ord("x")
    f = proto.decode(bytes(line))
    assert f.error == proto.BAD_CRC and f.id == "xbc"
    f = proto.decode(b"@abc status {}*697B832F\n")  # upper case hex is not a trailer
    assert f.error == proto.BAD_FRAME and f.id == "abc"
    assert proto.decode(b"@abc status {}\n").error == proto.BAD_FRAME
    assert proto.decode(b"@abc status {}*1234567\n").error == proto.BAD_FRAME


def test_crlf_accepted():
    line = proto.encode_request("a", "status", {})
    assert proto.decode(line[:-1] + b"\r\n").name == "status"
    assert proto.decode(line[:-1]).name == "status"
    assert proto.decode(line.decode()).name == "status"


def test_too_long():
    body = {"plan": "x" * (proto.MAX_LINE - 20)}
    e = raises(proto.CommandError, proto.encode_request, "a", "plan.set", body)
    assert e.code == proto.TOO_LONG
    f = proto.decode(_with_crc("@big plan.set " + '{"p":"%s"}' % ("y" * 1100)))
    assert f.error == proto.TOO_LONG and f.id == "big"
    # exactly at the limit (newline included) is fine
    head = '@a status {"s":"'
    pad = proto.MAX_LINE - len(head) - 2 - 10
    line = _with_crc(head + "z" * pad + '"}')
    assert len(line) == proto.MAX_LINE
    assert proto.decode(line).error is None
    line = _with_crc(head + "z" * (pad + 1) + '"}')
    assert proto.decode(line).error == proto.TOO_LONG


def test_ids():
    assert proto.valid_id("a") and proto.valid_id("A-z_09") and proto.valid_id("x" * 24)
    assert not proto.valid_id("") and not proto.valid_id("x" * 25)
    assert not proto.valid_id("a b") and not proto.valid_id("a.b") and not proto.valid_id(5)
    assert proto.decode(_with_crc("@" + "x" * 25 + " status {}")).error == proto.BAD_FRAME
    assert proto.decode(_with_crc("@a.b status {}")).error == proto.BAD_FRAME
    assert raises(proto.CommandError, proto.encode_request, "a b", "status").code == proto.BAD_FRAME
    assert proto.read_id(b"@abc status") == "abc"
    assert proto.read_id(b"@abc") is None
    assert proto.read_id(b"=abc ok") is None
    assert proto.read_id(b"@a!c x") is None


def test_structure_errors():
    bad = [
        "@a status",  # no json
        "@a  status {}",  # empty name
        "@a Status {}",  # upper case name
        "#a status {}",  # unknown kind
        "=a maybe {}",  # response neither ok nor err
        '=a err {"code":1}',  # err without a string code
        "!x alarm.raised {}",  # event seq not a number
        "@a status []",  # body not an object
        "@a status {} {}",
        '@a status {"a":1.5}',
        '@a status {"a":1e3}',
        '@a status {"a":01}',
        '@a status {"a":[1,]}',
        '@a status {"a":1,}',
        '@a status {"a":NaN}',
        "@a status {'a':1}",
        '@a status {"a":"\\x"}',
        '@a status {"a":"\\ud800"}',
        '@a status {"a":"unterminated}',
        '@a status {"a":' + "1" * 19 + "}",
        '@a status {"a":tru}',
        "@a status {",
    ]
    for text in bad:
        f = proto.decode(_with_crc(text))
        assert f.error == proto.BAD_FRAME, text
        assert f.kind is None


def test_json_accepts():
    f = proto.decode(_with_crc('@a x { "k" : [ 1 , -2 , "s\\n\\"\\u0041" , { } , [ ] ] , "t" : false }'))
    assert f.error is None
    assert f.body == {"k": [1, -2, 's\n"A', {}, []], "t": False}
    deep = '{"a":' * 8 + "1" + "}" * 8
    assert proto.decode(_with_crc("@a x " + deep)).error is None
    deeper = '{"a":' * 9 + "1" + "}" * 9
    assert proto.decode(_with_crc("@a x " + deeper)).error == proto.BAD_FRAME


def test_non_printable_and_types():
    assert proto.decode(b"@a status {}\x03*00000000\n").error == proto.BAD_FRAME
    assert proto.decode(b"\xff\xfe").error == proto.BAD_FRAME
    assert proto.decode("@a st\u00e9tus {}").error == proto.BAD_FRAME
    assert proto.decode(None).error == proto.BAD_FRAME
    assert proto.decode(12).error == proto.BAD_FRAME
    assert proto.decode(b"").error == proto.BAD_FRAME
    assert proto.decode(b"\n").error == proto.BAD_FRAME


def test_dictionary():
    assert proto.PROTOCOL_VERSION == 2
    assert proto.COMMANDS["plan.set"][0] == "clinician"
    assert proto.COMMANDS["status"][0] == "patient"
    assert proto.COMMANDS["hello"][0] == "none"
    for name in proto.COMMANDS:
        assert proto.valid_name(name)
        assert proto.COMMANDS[name][0] in proto.ROLES
    for name in proto.EVENTS:
        assert proto.valid_name(name)
    assert proto.role_rank("clinician") > proto.role_rank("patient") > proto.role_rank("none")
    assert proto.role_rank("root") == -1
    assert len(proto.ERROR_CODES) == 21  # THERAPY_RUNNING (issue 13)


def test_signed_request_trailer():
    line = b"@h1a2b3c-3 therapy.stop {}|1|354dc3d9980591afe7d9f639e1457f23*86540725\n"
    f = proto.decode(line)
    assert f.error is None and f.name == "therapy.stop" and f.body == {}
    assert f.seq == 1 and line[: f.mac_at] == b"@h1a2b3c-3 therapy.stop {}|1|"
    f = proto.decode(b"@7 status {}*cb76cfbd\n")
    assert f.error is None and f.seq is None
    # a "|" inside a JSON string is not a trailer
    line = proto.encode_request("a", "ack", {"kind": "x|1|" + "0" * 32})
    f = proto.decode(line)
    assert f.error is None and f.seq is None and f.body["kind"].startswith("x|1|")


def test_check_args():
    proto.check_args("refill", {"volume_nl": 1})
    proto.check_args("refill", {"volume_nl": 1, "conc_ng_ml": 2, "refill_by_epoch_s": 1_800_000_000})
    assert raises(proto.CommandError, proto.check_args, "refill", {}).code == proto.BAD_ARGS
    e = raises(proto.CommandError, proto.check_args, "status", {"x": 1})
    assert e.code == proto.BAD_ARGS and "x" in e.message
    assert raises(proto.CommandError, proto.check_args, "fly", {}).code == proto.UNKNOWN_CMD


def test_command_error():
    e = proto.CommandError(proto.LOCKOUT, "next bolus at 10:00")
    assert e.code == "LOCKOUT" and e.message == "next bolus at 10:00"
    assert "LOCKOUT" in str(e)


def test_the_command_dictionary_answers_with_protos_codes_and_roles():
    """pumpcore.commands (the dictionary, loaded per request, not resident) imports nothing of
    proto: its codes and roles, written as strings there, are proto's constants."""
    from pumpcore import commands

    for code in commands.ERROR_CODES:
        assert getattr(proto, code) == code
    assert commands.ROLES == (proto.ROLE_NONE, proto.ROLE_PATIENT, proto.ROLE_CLINICIAN)
    assert proto.COMMANDS is commands.COMMANDS  # proto still offers the names (host)
    assert commands.check("fly", {}, "clinician")[1] == proto.UNKNOWN_CMD
    assert commands.check("plan.set", {"plan": {}}, "patient")[1] == proto.FORBIDDEN
    assert commands.check("status", {}, "none")[1] == proto.AUTH_REQUIRED
    assert commands.check("refill", {}, "clinician") == ("clinician", proto.BAD_ARGS,
                                                         "missing argument volume_nl")
