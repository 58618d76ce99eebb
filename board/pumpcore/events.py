"""The event log: a ring buffer of the last `capacity` events.

An event is {"seq", "epoch_s", "ms", "kind", "data"}. seq increases by one per event and is
never reused, also across restarts: restore() continues after the highest seq seen, and
next_seq can also be kept in another record (to_dict()["next_seq"]) in case the log file is
lost.
"""


class EventError(ValueError):
    pass


class EventLog:
    def __init__(self, capacity=200, next_seq=1):
        if not isinstance(capacity, int) or capacity < 1:
            raise EventError("capacity must be an integer >= 1")
        self.capacity = capacity
        self._buf = [None] * capacity  # allocated once
        self._start = 0  # index of the oldest event
        self._n = 0
        self.next_seq = next_seq

    def __len__(self):
        return self._n

    def add(self, kind, data, epoch_s, now_ms):
        """Append an event; the oldest is dropped when full. Returns the event dict."""
        if not isinstance(kind, str):
            raise EventError("kind must be a string")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise EventError("data must be a dict")
        ev = {"seq": self.next_seq, "epoch_s": epoch_s, "ms": now_ms, "kind": kind, "data": data}
        self.next_seq += 1
        self._put(ev)
        return ev

    def _put(self, ev):
        cap = self.capacity
        if self._n < cap:
            self._buf[(self._start + self._n) % cap] = ev
            self._n += 1
        else:
            self._buf[self._start] = ev
            self._start = (self._start + 1) % cap

    def _at(self, i):
        return self._buf[(self._start + i) % self.capacity]

    def first_seq(self):
        """seq of the oldest event kept (next_seq if empty)."""
        return self._at(0)["seq"] if self._n else self.next_seq

    def last(self):
        return self._at(self._n - 1) if self._n else None

    def events(self):
        """All kept events, oldest first (a new list)."""
        return [self._at(i) for i in range(self._n)]

    def since(self, seq=0, limit=50):
        """Events with seq >= `seq`, oldest first, at most `limit`. Returns (events, next):
        `next` is the seq to ask for next time (after the last returned event, or next_seq
        when nothing was returned)."""
        if limit is None:
            limit = self._n
        if not isinstance(seq, int) or not isinstance(limit, int) or limit < 0:
            raise EventError("seq and limit must be integers, limit >= 0")
        out = []
        n = self._n
        if n and limit:
            # seqs in the buffer increase strictly; skip straight to the first wanted one
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi) // 2
                if self._at(mid)["seq"] < seq:
                    lo = mid + 1
                else:
                    hi = mid
            i = lo
            while i < n and len(out) < limit:
                out.append(self._at(i))
                i += 1
        if out:
            return out, out[-1]["seq"] + 1
        return out, self.next_seq

    def restore(self, events, next_seq=1):
        """Reload events (oldest first, e.g. from Store.load_events()); keeps the last
        `capacity` with strictly increasing seq. next_seq continues after the highest seq
        seen and never goes below the given next_seq."""
        self._buf = [None] * self.capacity
        self._start = 0
        self._n = 0
        top = 0
        for ev in events:
            s = ev.get("seq") if isinstance(ev, dict) else None
            if not isinstance(s, int) or s <= top:
                continue
            top = s
            self._put(ev)
        self.next_seq = top + 1 if top + 1 > next_seq else next_seq
        return self

    def to_dict(self):
        return {"capacity": self.capacity, "next_seq": self.next_seq, "events": self.events()}

    @classmethod
    def from_dict(cls, d, capacity=None):
        log = cls(capacity if capacity is not None else d.get("capacity", 200))
        return log.restore(d.get("events", ()), d.get("next_seq", 1))
