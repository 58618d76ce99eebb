# Runs at power-on on a Pico, an ESP32 and the virtual rig: pick the hardware layer, run the app.
# Wiring only; the logic is in pumpcore (pure) and hw (the only code that touches hardware).
import json
import sys


def board_name():
    if sys.platform == "rp2":
        return "pico"
    if sys.platform == "esp32":
        return "esp32"
    return "sim"


def make_board():
    name = board_name()
    if name == "pico":
        from hw import rp2 as hw
    elif name == "esp32":
        from hw import esp32 as hw
    else:
        from hw import sim as hw
    with open("boards/%s.json" % name) as f:
        cfg = json.load(f)
    board = hw.make_board(cfg)
    if not getattr(board, "uid", None):
        import binascii

        import machine

        board.uid = binascii.hexlify(machine.unique_id()).decode()
    return board


def run():
    import gc

    from pumpcore.app import App

    board = make_board()
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
