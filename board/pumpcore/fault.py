"""Faults of the main loop and the boot-loop guard, imported when a crash is being recorded and
once at power-on. Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory").

A crash of the loop (App.crash, called by main.py before it resets the board) is counted in the
`crash` record: the last CRASH_LIMIT crashes, each [epoch_s or None, ms since boot]. At power-on
the guard looks at it: CRASH_LIMIT crashes within CRASH_WINDOW_S keep the pump in its safe state
(motor off, FAULT alarm sounding) instead of resuming into the next crash. With a wall clock
(the board's RTC, or the pump clock a clinician set) the window is measured between the first
and the last crash; without one, by the time each later boot ran before it crashed (a boot loop
crashes soon after power-on, so this never overstates the window).

Pure: the store and the times are passed in.
"""

CRASH_LIMIT = 3
CRASH_WINDOW_S = 600
_TYPE_MAX = 32
_WHERE_MAX = 60
_TEXT_MAX = 60
GUARD = "boot loop"  # safe_reason prefix of the guard's safe state


def describe(exc):
    """{"type", "where", "text"} of an exception, each short: the type name, the innermost
    place the traceback names (file:line function), the start of its message."""
    where = ""
    try:
        import io
        import sys

        buf = io.StringIO()
        pe = getattr(sys, "print_exception", None)
        if pe is not None:  # MicroPython
            pe(exc, buf)
        else:
            import traceback  # type: ignore[import-not-found]  # CPython (tests)

            traceback.print_exception(type(exc), exc, exc.__traceback__, file=buf)
        where = place(buf.getvalue())
    except Exception:  # noqa: S110  (the place is a hint; the type is what counts)
        pass
    try:
        text = str(exc)
    except Exception:
        text = ""
    return {"type": type(exc).__name__[:_TYPE_MAX], "where": where[:_WHERE_MAX],
            "text": text[:_TEXT_MAX]}


def place(tb):
    """'file:line function' from the last `File "...", line N, in f` of a traceback text."""
    i = tb.rfind('File "')
    if i < 0:
        return ""
    j = tb.find("\n", i)
    ln = tb[i + 6 : j if j > 0 else len(tb)]
    q = ln.find('"')
    f = ln[:q] if q >= 0 else ln
    if f.startswith("/"):
        f = f[f.rfind("/", 0, f.rfind("/")) + 1 :]  # the package and the module are enough
    rest = ln[q + 1 :] if q >= 0 else ""
    line = ""
    k = rest.find("line ")
    if k >= 0:
        e = k + 5
        while e < len(rest) and "0" <= rest[e] <= "9":
            e += 1
        line = rest[k + 5 : e]
    fn = ""
    k = rest.find(" in ")
    if k >= 0:
        fn = rest[k + 4 :].strip()
    return "%s:%s %s" % (f, line, fn) if fn else "%s:%s" % (f, line)


def crashes(store):
    """The crash list of the record ([] if none or unreadable)."""
    try:
        rec = store.load("crash")
    except Exception:
        return []
    c = rec.get("crashes") if isinstance(rec, dict) else None
    return c if isinstance(c, list) else []


def count_crash(store, exc, epoch_s, uptime_ms, strict=False):
    """Add a crash to the record; returns the FAULT event's data. A failed save is ignored
    (a full flash must not stop the reset), or raised with strict."""
    info = describe(exc)
    c = crashes(store)
    c.append([epoch_s, uptime_ms])
    c = c[-CRASH_LIMIT:]
    info["crashes"] = len(c)
    try:
        store.save("crash", {"crashes": c})
    except Exception:
        if strict:
            raise
    return info


# In the guard's safe state only these are answered; the rest are refused with SAFE_STATE
# until a clinician leaves it (ack FAULT or therapy.resume)
GUARD_OPEN = ("status", "log", "alarms", "ack", "therapy.resume", "therapy.stop", "plan.get",
              "calib.get", "clock.get", "maintenance")


def check_cmd(app, cmd):
    """Raise CommandError(SAFE_STATE) for a command the guard's safe state refuses."""
    if cmd not in GUARD_OPEN and guarded(app):
        from .proto import SAFE_STATE, CommandError

        raise CommandError(SAFE_STATE, "boot-loop guard: ack FAULT or therapy.resume first")


def guarded(app):
    """True in the guard's safe state."""
    return app.therapy == "safe" and (app.safe_reason or "").startswith(GUARD)


def boot_guard(app, now):
    """At power-on (App.__init__, after the records are restored): CRASH_LIMIT crashes within
    CRASH_WINDOW_S put the pump in its safe state instead of resuming."""
    from . import alarms as al

    reason = guard_reason(app.store)
    if reason is not None and app.therapy != "safe":
        app.enter_safe(now, reason, al.FAULT)


def record(app, exc, now):
    """App.crash's work once the motor is stopped: the crash counted, a FAULT event with the
    exception's type and place, the FAULT alarm latched (sounding again if it had been
    acknowledged), the state saved, the queued frames written out. Returns True: reset the
    board; False in the guard's safe state (motor off already: a reset would only loop, so
    the loop goes on, without logging every repeat)."""
    from . import alarms as al

    if guarded(app):
        return False
    ep = app.board.wall_epoch_s()
    info = count_crash(app.store, exc, ep if ep is not None else app.epoch(now), now)
    app.log_event("fault", info, now)
    app.alarms.condition_cleared(al.FAULT, None)
    app.raise_alarm(al.FAULT, now)
    app.alarms.condition_cleared(al.FAULT, None)  # latched: listed until acknowledged
    app.save_state(now)
    app.server.write_output(app.board.write_serial)
    return True


def clear(store):
    """A clinician left the guard: the count starts again."""
    store.save("crash", {"crashes": []})


def tripped(c, window_s=CRASH_WINDOW_S, limit=CRASH_LIMIT):
    """True if the last `limit` crashes of list c fall within window_s."""
    if len(c) < limit:
        return False
    last = c[-limit:]
    try:
        if last[0][0] is not None and last[-1][0] is not None:
            return last[-1][0] - last[0][0] <= window_s
        up = 0
        for e in last[1:]:
            up += e[1]
        return up <= window_s * 1000
    except (TypeError, IndexError):
        return False


def guard_reason(store):
    """The safe-state reason if the guard holds at this power-on, else None."""
    c = crashes(store)
    if not tripped(c):
        return None
    return "%s: %d crashes within %d min" % (GUARD, len(c), CRASH_WINDOW_S // 60)
