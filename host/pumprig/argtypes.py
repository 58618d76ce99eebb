"""Argument types for the CLI's numbers: argparse reports a bad value as `pumprig: error:
argument --x: ...` (exit 2) instead of taking nan, inf or a negative number for a time."""

import argparse
import math


def positive(text):
    """A finite number > 0 (seconds, a density, a scale)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError("%r: give a finite number above 0" % text)
    return v


def seconds(text):
    """A time in seconds: finite, > 0, at most a day (a wait longer than that is a mistake)."""
    v = positive(text)
    if v > 86_400:
        raise argparse.ArgumentTypeError("%r: at most 86400 s" % text)
    return v


def count(text):
    """An integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if v < 0:
        raise argparse.ArgumentTypeError("%r: give a whole number >= 0" % text)
    return v
