"""A stand-in for blinka's `digitalio` (tests/farm/_lab.py): each level an output is set to is
written to the JSON file $FAKE_BLINKA_LOG ({pin: level}), for the test to read."""

import json
import os


class Direction:
    INPUT = "in"
    OUTPUT = "out"


class DigitalInOut:
    def __init__(self, pin):
        self.pin = pin
        self.direction = None
        self._value = False

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, level):
        self._value = bool(level)
        path = os.environ["FAKE_BLINKA_LOG"]
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError:
            state = {}
        state[self.pin] = self._value
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)

    def deinit(self):
        pass
