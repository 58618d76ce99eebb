"""A stand-in for blinka's `busio` (tests/farm/_lab.py): the farm test's bench has no I2C."""


class I2C:
    def __init__(self, scl, sda):
        raise OSError("the farm test's stand-in adapter has no I2C bus")
