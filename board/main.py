# Runs at power-on on a Pico, an ESP32 and the virtual rig: pick the hardware layer, run the app.
# Wiring only; the logic is in pumpcore (pure) and hw (the only code that touches hardware).
import gc
import json
import sys

# The firmware's resident modules, each after those it imports. They are loaded one at a time
# with a collection after each: loading a .mpy leaves garbage behind, and code allocated among
# that garbage fragments a small heap. Measured on the unix port with a 136 KB heap: largest
# free block after loading 0.7 KB at once, 14 KB one by one (bench/bench_memory.py).
# Not here: pumpcore.admin, pumpcore.session (the login) and pumpcore.auth, imported for a call.
MODULES = ("pumpcore.canon", "pumpcore.dose", "pumpcore.proto", "pumpcore.server",
           "pumpcore.store", "pumpcore.events", "pumpcore.alarms", "pumpcore.battery",
           "pumpcore.delivery", "pumpcore.reservoir", "pumpcore.schedule", "pumpcore.app",
           "hw.common")


def board_name():
    if sys.platform == "rp2":
        return "pico"
    if sys.platform == "esp32":
        return "esp32"
    return "sim"


def load_modules(name):
    for m in MODULES + ("hw." + ("rp2" if name == "pico" else name),):
        __import__(m)
        gc.collect()


def make_board():
    name = board_name()
    load_modules(name)
    resident = list(sys.modules)
    if name == "pico":
        from hw import rp2 as hw
    elif name == "esp32":
        from hw import esp32 as hw
    else:
        from hw import sim as hw
    with open("boards/%s.json" % name) as f:
        cfg = json.load(f)
    board = hw.make_board(cfg)
    from pumpcore.app import drop_transient

    drop_transient(resident)  # hw.setup: power-on only
    if not getattr(board, "uid", None):
        import binascii

        import machine

        board.uid = binascii.hexlify(machine.unique_id()).decode()
    return board


def run():
    board = make_board()
    from pumpcore.app import App

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
