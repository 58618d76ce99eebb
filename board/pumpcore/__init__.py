"""Pure core of the pump firmware: imports nothing from machine.

`const` for every firmware module (`from pumpcore import const`): MicroPython's own, whose
calls mpy-cross folds at compile time; on CPython (host, tests) the identity.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


VERSION = "0.1.0"
