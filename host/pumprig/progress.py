"""Progress on long work (a simulation's days, a bench run's samples) through tqdm.

Quiet when the stream is not a terminal (a log, a pipe, CI): no bar and no carriage returns.
Used as a context manager, so the bar is cleared before anything else is printed, even when
the work fails: an error never lands on the bar's line.

    with Progress("simulating", total=90, unit="day") as show:
        show(done, total)
"""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, desc: str, total: int, unit: str = "it", stream=None):
        self.desc = desc
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None

    def __enter__(self):
        from tqdm import tqdm

        tty = getattr(self.stream, "isatty", lambda: False)()
        # leave=False: the bar is erased when it closes, so the summary (or an error) that
        # follows starts on a clean line
        self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream,
                        disable=not tty, leave=False, dynamic_ncols=True)
        return self

    def __call__(self, done: int, total: int | None = None):
        if self.bar is None:
            return
        if total is not None and total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return False


class Phases:
    """Progress of work in named phases (a bench's settle, run and analysis): one bar per phase,
    each replacing the last; call as `show(phase, done, total)`. A context manager, like
    Progress: the bar is cleared on the way out, error or not."""

    def __init__(self, unit: str = "sample", stream=None, enabled: bool = True):
        self.unit = unit
        self.stream = stream
        self.enabled = enabled
        self.phase = None
        self.bar = None

    def __enter__(self):
        return self

    def __call__(self, phase: str, done: int, total: int):
        if not self.enabled:
            return
        if phase != self.phase:
            self._close()
            self.phase = phase
            self.bar = Progress(phase, total, self.unit, self.stream).__enter__()
        self.bar(done, total)

    def _close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __exit__(self, *exc):
        self._close()
        return False
