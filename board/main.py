# Runs at power-on on a Pico, an ESP32 and the virtual rig: make the board (hw/start.py, which
# arms the watchdog before it imports the app), run the app. Wiring only; the logic is in
# pumpcore (pure) and hw (the only code that touches hardware). Short on purpose: a board
# compiles main.py from source, in its heap.
#
# Ctrl-C is data from power-on: hw/start.py calls micropython.kbd_intr(-1) first thing (the
# virtual rig's power-on, which reads this line, turns its pty's ISIG off before main.py runs),
# so a Ctrl-C during boot cannot open the REPL of a pump about to resume therapy. The app opens
# it while therapy is stopped (App._kbd_sync). The boot check runs first (no therapy yet) and
# arms no watchdog: its safe state is never reset into a loop. Anything that raises between
# the boot check and the loop goes to bootsafe.failed (the boot-loop guard before the app).
import gc
import sys

_board = None  # the Board, once made (bootsafe.failed: motor, watchdog, reset)


def _boot():
    """The App, on the Board of hw/start.py."""
    global _board
    from hw import start

    _board = start.make_board()
    del start
    from pumpcore import loader
    from pumpcore.app import App

    loader.drop()  # hw.start, hw.setup: power-on only
    return App(_board)


def run():
    import bootcheck  # every installed file against the flash manifest, before any import

    bad = bootcheck.check()
    del sys.modules["bootcheck"], bootcheck
    gc.collect()
    if bad:
        import bootsafe  # the FIRMWARE safe state, until Ctrl-C or `maintenance`

        bootsafe.run(bad)
        return
    try:
        app = _boot()
    except Exception as e:  # noqa: BLE001  (a board json, a peripheral, an import, MemoryError)
        for m in list(sys.modules):
            if m.startswith("pumpcore"):
                del sys.modules[m]  # the heap bootsafe.py compiles in
        gc.collect()
        import bootsafe

        # motor off, counted, logged, reset; or the boot-loop guard's safe state (answers)
        bootsafe.failed(e, _board)
        return
    board = _board
    while True:
        try:
            app.step(board.now_ms())
            board.wait(app.deadline_ms)  # the only place the watchdog is fed
        except KeyboardInterrupt:
            # Ctrl-C interrupts only while therapy is stopped or after `maintenance`
            # (App._kbd_sync): no pulse keeps running unaccounted, and a timer keeps the
            # watchdog fed at the REPL (mpremote, flashing) on a board left on purpose
            app.shutdown(board.now_ms())
            board.feed_from_timer()
            raise
        except Exception as e:  # noqa: BLE001  (MemoryError too)
            # the loop failed: motor stopped, FAULT event and alarm, crash counted for the
            # boot-loop guard, all persisted; then a clean reset (never the REPL, never a
            # timer feeding a dead loop). The plan resumes where the account stands.
            if app.crash(e):  # never raises
                board.reset()
            # in the boot-loop guard's safe state the loop goes on (motor off): a fault that
            # keeps the loop from reaching board.wait() is reset by the watchdog


run()
