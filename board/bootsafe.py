# The safe state that runs without the firmware's app, for two causes:
# - FIRMWARE (run): the boot check (bootcheck.py) found a file that does not match the manifest
#   of `pumprig flash`. Nothing of the firmware is imported but the event log's modules, and
#   only when they are intact.
# - the boot-loop guard before the app exists (failed): something raised between the boot check
#   and the main loop (hw/start.make_board, the app's imports, building the App). Each such boot
#   disables the motor, counts the crash in the `crash` record as a crash of the loop is counted
#   (pumpcore.fault), logs a `fault` event and resets; once the guard holds (pumpcore.fault:
#   CRASH_LIMIT crashes within CRASH_WINDOW_S) the board stays here instead of looping.
# In both: motor disabled, the alarm's pattern on the buzzer and LED, the watchdog fed where one
# is armed, and a tiny responder that answers `hello`, `status` and (when the log's modules are
# intact) `log` on the wire protocol; everything else is refused with SAFE_STATE. Ctrl-C
# (mpremote, `pumprig flash`) leaves it for the REPL; so does `maintenance`. Kept as source,
# never .mpy: a torn .mpy makes its import spin forever, a torn source is a SyntaxError.
import sys

MANIFEST = ".pumprig-manifest.json"
_LOG = ("__init__", "canon", "store", "events", "evlog")  # what writing an event imports
_PAGES = _LOG + ("proto", "logpages")  # what the `log` answer imports
_MSG_MAX = 120  # an error message's length (pumpcore.proto.MAX_MESSAGE)
_pages = False  # `log` is answered (its modules passed the boot check)


def run(bad):
    """Hold the FIRMWARE safe state for the failed paths `bad`; returns on `maintenance`
    (main.py ends, the REPL follows); Ctrl-C raises KeyboardInterrupt."""
    safe(_manifest(), bad)


def failed(exc, board=None):
    """main.py, when anything between the boot check and the main loop raised exc; board: the
    Board if hw/start.make_board returned one. Motor off, the crash counted and a `fault` event
    logged (where the store can be opened), then a reset; once the boot-loop guard holds, or
    when the crash cannot be counted (a boot that cannot count its failures must not loop), the
    safe state instead. Returns on `maintenance`; Ctrl-C raises KeyboardInterrupt."""
    try:
        board.motor_enable(False)  # None has no motor_enable: the pins below do it
    except Exception:
        pass
    # the watchdog hw/start armed before the app's imports, or None (the fault came first)
    wdt = board if board is not None else getattr(sys.modules.get("hw.start"), "wdt", None)
    files = _manifest()
    try:
        ep = board.wall_epoch_s()  # the RTC, when the board was made
    except Exception:
        ep = None
    now = _uptime_ms(board)
    info, reason = _count(exc, ep, now)
    logged = _log_event(files, [], "fault", info, ep, now)
    if reason is None:
        try:
            board.reset()
        except Exception:
            import machine

            machine.reset()
        reason = "boot loop: the reset failed"
    safe(files, [], info, reason, logged, board, wdt)


def _manifest():
    try:
        import json

        with open(MANIFEST) as f:
            files = json.load(f)["files"]
        files.items()
        return files
    except Exception:
        return {}


def _uptime_ms(board):
    """ms since this power-on: the board's clock, the virtual rig's, or ticks_ms."""
    try:
        return board.now_ms()
    except Exception:
        pass
    try:
        import _world  # the virtual rig (its shim): the world's clock

        return _world.now_ms() - _world.boot_ms
    except Exception:
        import time

        return time.ticks_ms()


def _drop():
    """The firmware's modules out of the heap (this state never returns to the app)."""
    import gc

    for m in list(sys.modules):
        if m.startswith("pumpcore"):
            del sys.modules[m]
    gc.collect()


def _count(exc, epoch_s, now_ms):
    """(the fault event's data, the guard's safe_reason or None): the crash counted."""
    info = {"type": type(exc).__name__[:32], "where": "", "text": "", "crashes": 1}
    reason = "boot loop: the crash could not be counted"
    try:
        from pumpcore import fault
        from pumpcore.store import Store

        info = fault.describe(exc)
        info["crashes"] = 1
        st = Store()
        info = fault.count_crash(st, exc, epoch_s, now_ms, True)
        reason = fault.guard_reason(st)
    except Exception:  # the modules or the store failed: not counted, held
        pass
    _drop()
    return info, reason


def _text(s):
    """A JSON string of printable ASCII, bounded (a path from the manifest, a message)."""
    return '"%s"' % "".join(c if " " <= c <= "~" and c not in '"\\' else "?"
                            for c in s[:_MSG_MAX])


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


def _why(info):
    """SAFE_STATE's message: the first bad file, or the boot failure's type and place."""
    f = info.get("fault")
    if f:
        return "%s (%s at %s): run `pumprig flash`" % (info["safe_reason"], f["type"], f["where"])
    return "firmware check failed (%s): run `pumprig flash`" % info["bad"][0]


def answer(line, info):
    """The response frame to one request line (bytes without the newline), or None when the
    line is not a valid request. hello and status answer with the info; log with the event
    log's pages where its modules are intact; everything else, login included, is refused
    with SAFE_STATE."""
    from binascii import crc32

    star = line.rfind(b"*")
    if line[:1] != b"@" or star < 0 or len(line) > 1024:
        return None
    try:
        if int(line[star + 1:], 16) != crc32(line[:star]) & 0xFFFFFFFF:
            return None
        parts = line[1:star].decode().split(" ", 2)
        rid, cmd = parts[:2]
    except Exception:
        return None
    if not 0 < len(rid) <= 24 or not all(c.isalpha() or c.isdigit() or c in "-_" for c in rid):
        return None
    if cmd == "hello" or cmd == "status":
        return _frame("=%s ok" % rid, info)
    if cmd == "maintenance":
        return _frame("=%s ok" % rid, {"repl": True})
    if cmd == "log" and _pages:
        return _log(rid, parts[2] if len(parts) > 2 else "{}")
    return _frame("=%s err" % rid, {"code": "SAFE_STATE", "message": _why(info)})


class _App:
    """What pumpcore.logpages reads of an App: its event log."""

    def __init__(self, events):
        self.events = events


def _log(rid, body):
    """The `log` answer, as the firmware gives it (pumpcore.logpages), from the log file."""
    try:
        import json

        a = json.loads(body)
        since = a.get("since", 0)
        limit = a.get("limit", 20)
        ok = len(a) == len([k for k in a if k == "since" or k == "limit"])
        ok = ok and type(since) is int and type(limit) is int and 0 <= since <= 2**30
    except Exception:
        ok = False
    if not ok or not 1 <= limit <= 50:
        return _frame("=%s err" % rid, {"code": "BAD_ARGS", "message": "since >= 0, limit 1..50"})
    try:
        from pumpcore import evlog, logpages, proto
        from pumpcore.events import EventLog
        from pumpcore.store import Store

        log = EventLog(Store(), 200)
        log.load(evlog.restore(log))
        res = logpages.log(_App(log), {"since": since, "limit": limit}, 0, rid)
        return proto.encode_ok(rid, res)
    except Exception as e:
        return _frame("=%s err" % rid, {"code": "INTERNAL",
                                        "message": "log unreadable (%s)" % type(e).__name__})
    finally:
        _drop()


def _intact(files, bad, names):
    """True if the pumpcore modules `names` are listed in the manifest and not bad."""
    for n in names:
        p = "pumpcore/%s.mpy" % n
        if p not in files:
            p = p[:-3] + "py"
        if p not in files or p in bad:
            return False
    return True


def _log_event(files, bad, kind, data, epoch_s, now_ms):
    """An event in the log, when the modules it takes are intact; True if written."""
    if not _intact(files, bad, _LOG):
        return False
    try:
        from pumpcore import evlog
        from pumpcore.events import EventLog
        from pumpcore.store import Store

        log = EventLog(Store(), 200)
        log.load(evlog.restore(log))
        log.add(kind, data, epoch_s, now_ms)
        return True
    except Exception:  # the log is best effort here
        return False
    finally:
        _drop()


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


def _info(name, uid, reason, bad, logged, motor, fault):
    """hello's and status's answer (protocol.schema.json, $defs/firmware_safe)."""
    info = {"firmware": "safe", "protocol": 2, "board": name, "uid": uid, "nonce": "",
            "therapy": "safe", "safe_reason": reason, "mode": "none",
            "alarms": ["FAULT" if fault else "FIRMWARE"], "bad": bad[:8], "logged": logged,
            "motor": motor}
    if fault:
        info["fault"] = fault
    return info


def _leave(buz, board, wdt):
    """To the REPL (Ctrl-C, `maintenance`): buzzer off; an armed watchdog fed from a timer (the
    RP2040's and ESP32's cannot be stopped), as the app does for an allowed Ctrl-C."""
    if buz is not None:
        buz.duty_u16(0)
    for m in list(sys.modules):  # the heap for the REPL's work (flashing)
        if m.startswith("pumpcore") or m.startswith("hw") or m == "bootsafe":
            del sys.modules[m]
    if wdt is None:
        return
    if board is not None:
        board.feed_from_timer()
        return
    try:
        import _world  # the virtual rig: the world feeds it

        _world.send("k\n")
        return
    except ImportError:
        pass
    import machine

    for tid in (-1, 3):  # hw.common's choice: a virtual timer on the RP2040, timer 3 on ESP32
        try:
            t = machine.Timer(tid)
            t.init(period=1000, mode=machine.Timer.PERIODIC, callback=lambda _t: wdt.feed())
            return
        except Exception:
            pass


def safe(files, bad, fault=None, reason="FIRMWARE", logged=None, board=None, wdt=None):
    """The safe state: motor disabled, the alarm's pattern, hello/status/log answered. FIRMWARE
    (the files `bad` failed the boot check), or the boot-loop guard (fault: the last boot
    failure's event data; reason: its safe_reason). wdt: an armed watchdog (its feed())."""
    global _pages
    import select
    import time

    name, uid = _board()
    cfg = "boards/%s.json" % name
    en = led = buz = None
    hz, lo = 880, 660
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
            lo = c.get("tones", {}).get("lo_hz", lo)
        except Exception:
            pass
    t0 = time.ticks_ms()
    if logged is None:
        logged = _log_event(files, bad, "alarm.raised",
                            {"kind": "FIRMWARE", "critical": True, "files": bad[:4]}, None, 0)
    _pages = _intact(files, bad, _PAGES)
    info = _info(name, uid, reason, bad, logged, en is not None or board is not None, fault)
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
    # every `every` ms: FIRMWARE three short beeps (30 s), FAULT the critical two-tone, 4
    # pairs of 250 ms (pumpcore.alarmlist), every 10 s; `busy`: the sounding part, polled finer
    every, busy = (10000, 2100) if fault else (30000, 600)
    try:
        while True:
            if wdt is not None:
                wdt.feed()
            t = time.ticks_diff(time.ticks_ms(), t0)
            if led is not None:
                led.value((t // 125) & 1)  # 4 Hz
            r = t % every
            if fault:
                f = (hz if (r // 250) % 2 == 0 else lo) if r < 2000 else 0
            else:
                f = hz if r < 500 and (r // 100) % 2 == 0 else 0
            if buz is not None and f != tone:
                buz.freq(f or 1000)
                buz.duty_u16(32768 if f else 0)
                tone = f
            if not poll.poll(50 if r < busy else 125):
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
                    _leave(buz, board, wdt)
                    return
    except KeyboardInterrupt:
        _leave(buz, board, wdt)
        raise
