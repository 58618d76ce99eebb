"""`pumprig monitor`: a live view that polls and lets go of the port between polls.

Each update opens the port, logs in, reads `status` and the event log from where the last
update stopped, and closes the port again, so another `pumprig status` (or any command) can
use the rig while a monitor runs; a command that finds the port in the monitor's hands waits
for it (pumprig.client, the port lock). The first update shows the last events already in the
log (found by `log_end`, a few `log` requests, however long the log), and every view says when
it was last updated. An update that fails (port busy, rig rebooting) keeps the last view and
says why.
"""

from __future__ import annotations

import datetime as dt
import json

RECENT = 5


def log_end(client):
    """The seq after the last event in the rig's log (0 for an empty log): an exponential then
    binary search with one-event `log` pages, so a long log costs a few dozen requests."""

    def first_at(seq):
        evs = client.log(seq, 1).get("events") or []
        return evs[0]["seq"] if evs else None

    lo = first_at(0)
    if lo is None:
        return 0
    step = 64
    while True:                         # lo: an existing seq; find hi with nothing at/after it
        hi = lo + step
        s = first_at(hi)
        if s is None:
            break
        lo, step = s, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        s = first_at(mid)
        if s is None:
            hi = mid
        else:
            lo = s
    return lo + 1


def read_new(client, since, limit=50):
    """Events from `since` to the end of the log (paged); returns (events, next since)."""
    out = []
    while True:
        res = client.log(since, limit)
        evs = res.get("events") or []
        if not evs:
            return out, since
        out.extend(evs)
        nxt = res.get("next")
        since = nxt if isinstance(nxt, int) and nxt > since else evs[-1]["seq"] + 1


class Monitor:
    """The state between updates: the last status, the recent events, the log cursor."""

    def __init__(self, open_client, recent=RECENT, now=None):
        self.open_client = open_client        # () -> an unopened Client
        self.recent = recent
        self.now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self.status = None
        self.events = []
        self.since = None
        self.updated = None
        self.problem = None

    def update(self):
        """One poll: open, read, close. Returns True when the view is fresh."""
        from .errors import PumprigError

        try:
            with self.open_client() as c:
                st = c.status()
                end = st.get("log_next")  # the seq the next event gets (older firmware: None)
                if self.since is None:
                    self.since = max(0, log_end(c) - self.recent)
                new = []
                if end != self.since:  # nothing logged since the last update: no `log`
                    new, self.since = read_new(c, self.since)
                    if isinstance(end, int):
                        # seqs below `end` that were not returned do not exist (a restart
                        # skips the seqs it had reserved)
                        self.since = max(self.since, end)
        except PumprigError as e:
            self.problem = str(e)
            return False
        self.status = st
        self.events = (self.events + new)[-self.recent:]
        self.updated = self.now()
        self.problem = None
        return True

    def lines(self, status_lines):
        """The view, with `status_lines(status)` -> [(label, text)] from the CLI."""
        out = ["pumprig monitor  (Ctrl-C to quit)", ""]
        if self.status is not None:
            rows = status_lines(self.status)
            w = max(len(k) for k, _ in rows)
            out += ["%-*s  %s" % (w, k, v) for k, v in rows[2:9]]
        out.append("")
        out.append("recent events:" if self.events else "recent events: none in the log")
        for e in self.events:
            out.append("  #%s %s %s %s" % (e.get("seq"), _when(e.get("epoch_s")), e.get("kind"),
                                           json.dumps(e.get("data"), sort_keys=True)))
        out.append("")
        upd = self.updated.strftime("%Y-%m-%d %H:%M:%S UTC") if self.updated else "never"
        out.append("last update: %s" % upd)
        if self.problem:
            out.append("update failed: %s (showing the last view; retrying)" % self.problem)
        return out


def _when(epoch_s):
    if not isinstance(epoch_s, int) or epoch_s <= 0:
        return "-"
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
