# The FIRMWARE safe state, run by main.py when the boot check (bootcheck.py) finds a file that
# does not match the manifest of `pumprig flash`: motor disabled, the FIRMWARE alarm pattern on
# the buzzer and LED, an alarm.raised event in the log when the log's modules are intact, and a
# tiny responder that answers `hello` and `status` on the wire protocol (everything else is
# refused with SAFE_STATE). It imports no firmware module but those. Ctrl-C (mpremote,
# `pumprig flash`) leaves it for the REPL; so does `maintenance`. Kept as source, never .mpy: a
# torn .mpy makes its import spin forever, a torn source is a SyntaxError.
import sys

MANIFEST = ".pumprig-manifest.json"
_LOG = ("__init__", "canon", "store", "events", "evlog")  # what writing an event imports


def run(bad):
    """Hold the safe state for the failed paths `bad`; returns on `maintenance` (main.py ends,
    the REPL follows); Ctrl-C raises KeyboardInterrupt."""
    try:
        import json

        with open(MANIFEST) as f:
            files = json.load(f)["files"]
        files.items()
    except Exception:
        files = {}
    safe(files, bad)


def _text(s):
    """A JSON string of printable ASCII, bounded (a path from the manifest)."""
    return '"%s"' % "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in s[:64])


def _json(v):
    """Canonical JSON (sorted keys, no spaces) of str, int, bool, None, list and dict."""
    if isinstance(v, dict):
        return "{%s}" % ",".join("%s:%s" % (_text(k), _json(v[k])) for k in sorted(v))
    if isinstance(v, list):
        return "[%s]" % ",".join(_json(x) for x in v)
    if isinstance(v, str):
        return _text(v)
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    return "%d" % v


def _frame(head, body):
    from binascii import crc32

    b = ("%s %s" % (head, _json(body))).encode()
    return b + b"*%08x\n" % (crc32(b) & 0xFFFFFFFF)


def answer(line, info):
    """The response frame to one request line (bytes without the newline), or None when the
    line is not a valid request. hello and status answer with the FIRMWARE alarm; everything
    else, login included, is refused with SAFE_STATE."""
    from binascii import crc32

    star = line.rfind(b"*")
    if line[:1] != b"@" or star < 0 or len(line) > 1024:
        return None
    try:
        if int(line[star + 1:], 16) != crc32(line[:star]) & 0xFFFFFFFF:
            return None
        rid, cmd = line[1:star].decode().split(" ", 2)[:2]
    except Exception:
        return None
    if not 0 < len(rid) <= 24 or not all(c.isalpha() or c.isdigit() or c in "-_" for c in rid):
        return None
    if cmd == "hello" or cmd == "status":
        return _frame("=%s ok" % rid, info)
    if cmd == "maintenance":
        return _frame("=%s ok" % rid, {"repl": True})
    return _frame("=%s err" % rid, {
        "code": "SAFE_STATE",
        "message": "firmware check failed (%s): run `pumprig flash`" % info["bad"][0]})


def _log_event(files, bad, now_ms):
    """An alarm.raised FIRMWARE event in the log, when the modules it takes are intact."""
    for n in _LOG:
        p = "pumpcore/%s.mpy" % n
        if p not in files:
            p = p[:-3] + "py"
        if p not in files or p in bad:
            return False
    try:
        from pumpcore import evlog
        from pumpcore.events import EventLog
        from pumpcore.store import Store

        log = evlog.restore(EventLog(Store(), 200))
        log.add("alarm.raised", {"kind": "FIRMWARE", "critical": True, "files": bad[:4]},
                None, now_ms)
        return True
    except Exception:  # the log is best effort here
        return False
    finally:
        for m in list(sys.modules):
            if m.startswith("pumpcore"):
                del sys.modules[m]


def _board():
    """(boards json name, uid) of this board."""
    p = sys.platform
    name = "pico" if p == "rp2" else "esp32" if p == "esp32" else "sim"
    try:
        from binascii import hexlify

        import machine

        uid = hexlify(machine.unique_id()).decode()
    except Exception:
        uid = ""
    return name, uid


def safe(files, bad):
    """The FIRMWARE safe state: motor disabled, alarm pattern, status answered."""
    import select
    import time

    name, uid = _board()
    cfg = "boards/%s.json" % name
    en = led = buz = None
    hz = 880
    if cfg in files and cfg not in bad:
        try:
            import json

            import machine

            with open(cfg) as f:
                c = json.load(f)
            pins = c["pins"]
            Pin = machine.Pin
            en = Pin(pins["en"], Pin.OUT, value=1)  # TMC2209 EN is active low: disabled
            led = Pin(pins["led"], Pin.OUT, value=0)
            buz = machine.PWM(Pin(pins["buzzer"], Pin.OUT, value=0))
            buz.duty_u16(0)
            hz = c.get("tones", {}).get("hi_hz", hz)
        except Exception:
            pass
    t0 = time.ticks_ms()
    logged = _log_event(files, bad, 0)
    info = {"firmware": "safe", "protocol": 2, "board": name, "uid": uid, "nonce": "",
            "therapy": "safe", "safe_reason": "FIRMWARE", "mode": "none", "alarms": ["FIRMWARE"],
            "bad": bad[:8], "logged": logged, "motor": en is not None}
    try:
        import micropython

        micropython.kbd_intr(3)  # Ctrl-C works here, whatever ran before
    except Exception:
        pass
    try:
        import _world  # the virtual rig only (its shim): ISIG is off from power-on there

        _world.kbd_intr(True)
    except ImportError:
        pass
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    rd = sys.stdin.buffer
    wr = sys.stdout.buffer
    buf = bytearray()
    tone = -1
    while True:
        # FIRMWARE pattern: LED at 4 Hz; three short beeps every 30 s
        t = time.ticks_diff(time.ticks_ms(), t0)
        if led is not None:
            led.value((t // 125) & 1)
        r = t % 30000
        f = hz if r < 500 and (r // 100) % 2 == 0 else 0
        if buz is not None and f != tone:
            buz.freq(f or 1000)
            buz.duty_u16(32768 if f else 0)
            tone = f
        if not poll.poll(50 if r < 600 else 125):
            continue
        b = rd.read(1)
        if not b:
            continue
        if b != b"\n":
            if len(buf) < 1100:
                buf += b
            continue
        out = answer(bytes(buf).rstrip(b"\r"), info)
        buf = bytearray()
        if out:
            wr.write(out)
            if out.find(b'"repl":true') > 0:
                if buz is not None:
                    buz.duty_u16(0)
                return
