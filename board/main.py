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
    from pumpcore.app import App

    board = make_board()
    app = App(board)
    try:
        while True:
            app.step(board.now_ms())
            board.wait(app.deadline_ms)
    finally:
        # Ctrl-C (mpremote, flashing) or a crash: no pulse keeps running unaccounted.
        app.shutdown(board.now_ms())


run()
