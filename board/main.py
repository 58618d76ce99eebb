# Runs at power-on on a Pico, an ESP32 and the virtual rig: make the board (hw/start.py), run
# the app. Wiring only; the logic is in pumpcore (pure) and hw (the only code that touches
# hardware). Short on purpose: a board compiles main.py from source, in its heap.
import gc
import sys


def run():
    import bootcheck  # every installed file against the flash manifest, before any import

    bad = bootcheck.check()
    del sys.modules["bootcheck"], bootcheck
    gc.collect()
    if bad:
        import bootsafe  # the FIRMWARE safe state, until Ctrl-C or `maintenance`

        bootsafe.run(bad)
        return
    from hw import start

    board, resident = start.make_board()
    del start
    from pumpcore.app import App, drop_transient

    drop_transient(resident)  # hw.start, hw.setup: power-on only
    app = App(board)
    try:
        while True:
            try:
                app.step(board.now_ms())
                board.wait(app.deadline_ms)
            except MemoryError as e:
                # never stop silently: stop the motor with an exact account, then reset; the
                # records are atomic and the plan resumes where it was (RESET alarm)
                gc.collect()
                sys.print_exception(e)  # the console shows why the board restarted
                try:
                    with open("data/crash.txt", "w") as f:  # and so does the filesystem
                        sys.print_exception(e, f)
                except OSError:
                    pass
                app.shutdown(board.now_ms())
                board.reset()
    finally:
        # Ctrl-C (mpremote, flashing) or a crash: no pulse keeps running unaccounted.
        app.shutdown(board.now_ms())
        feed = getattr(board, "feed_from_timer", None)
        if feed is not None:
            feed()


run()
