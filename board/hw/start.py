"""Power-on: load the firmware's modules, pick this board's hardware layer, make the Board.

Imported by main.py once and dropped after (main.py is compiled from source at every
power-on, in the heap, so it stays short; this module is precompiled like the rest).
"""

import gc
import json
import sys

# The firmware's resident modules are pumpcore.loader.RESIDENT, each after those it imports
# (the board layers hw.rp2, hw.esp32, hw.sim: only this board's). They are loaded one at a time
# with a collection after each: loading a .mpy leaves garbage behind, and code allocated among
# that garbage fragments a small heap. Measured on the unix port with a 136 KB heap: largest
# free block after loading 0.7 KB at once, 14 KB one by one (bench/bench_memory.py).
_LAYERS = ("hw.pio_step", "hw.rp2", "hw.esp32", "hw.sim")  # RESIDENT's last entries
wdt = None  # the watchdog make_board armed: bootsafe.failed feeds it if make_board raises


def board_name():
    if sys.platform == "rp2":
        return "pico"
    if sys.platform == "esp32":
        return "esp32"
    return "sim"


def make_board():
    """This board's Board, with the resident modules (pumpcore.loader.RESIDENT) loaded.

    The watchdog is armed first, before any module of the app is imported: an import that
    never returns (a torn .mpy can spin) is reset like a hung loop."""
    global wdt
    name = board_name()
    if name != "sim":  # the virtual rig turned its pty's ISIG off at power-on (see main.py)
        import micropython

        micropython.kbd_intr(-1)  # Ctrl-C is data until the app allows it (App._kbd_sync)
    path = "boards/%s.json" % name
    with open(path) as f:
        wdt_ms = json.load(f).get("watchdog_ms", 0)
    gc.collect()  # the config is read again after the imports: nothing of it among their code
    import machine

    # armed here, handed to hw.setup after the imports (loading it now would leave a hole
    # among the resident modules' code when it is dropped)
    wdt = machine.WDT(timeout=wdt_ms) if wdt_ms else None
    from pumpcore.loader import RESIDENT

    for m in RESIDENT.split():
        if m not in _LAYERS:
            __import__(m)
            gc.collect()
    __import__("hw." + ("rp2" if name == "pico" else name))  # this board's layer
    gc.collect()
    if wdt is not None:
        wdt.feed()  # the imports came back: the app starts with a whole watchdog period
        from hw import setup

        setup.armed_wdt = wdt
    with open(path) as f:
        cfg = json.load(f)
    if name == "pico":
        from hw import rp2 as hw
    elif name == "esp32":
        from hw import esp32 as hw
    else:
        from hw import sim as hw
    board = hw.make_board(cfg)
    if not getattr(board, "uid", None):
        import binascii

        board.uid = binascii.hexlify(machine.unique_id()).decode()
    return board
