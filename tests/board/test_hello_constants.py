"""`hello` tells the host the board's constants (issue 16: the host copies none; simulate
hard-coded 50 for pullin_step_hz and 200_000 for pump_path_nl). A board whose config differs
from the sim defaults says so in hello's `limits`.

Runs under CPython and MicroPython.
"""

from _util import rmtree, tmpdir
from fakeboard import FakeBoard
from pumpcore import app as appmod
from pumpcore import proto

KEYS = {"clinician": "11" * 32, "patient": "22" * 32}


def test_hello_carries_the_boards_step_and_path_figures():
    """Finding (issue 16): the host hard-coded the board's pull-in rate and pump path."""
    root = tmpdir()
    try:
        b = FakeBoard(root=root + "/")
        cfg = dict(b.config)
        cfg.update({"step_pl": 200_000, "pump_path_nl": 150_000, "max_step_hz": 180,
                    "pullin_step_hz": 40})
        b.config = cfg
        app = appmod.App(b, keys=KEYS)
        b.rx = proto.encode_request("q1", "hello", {})
        b.t_ms = 1000
        app.step(1000)
        out = [proto.decode(x + b"\n") for x in b.tx.split(b"\n") if x.startswith(b"=")]
        assert len(out) == 1 and out[0].name == "ok", out
        lim = out[0].body["limits"]
        assert lim["pullin_step_hz"] == 40
        assert lim["max_step_hz"] == 180
        assert lim["pump_path_nl"] == 150_000
        assert lim["step_pl"] == 200_000 and out[0].body["step_pl"] == 200_000
        assert lim["max_nl_day"] == 180 * 86_400 * 200_000 // 1000
    finally:
        rmtree(root)
