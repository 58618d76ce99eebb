"""The event log: the last `capacity` events, kept in the store's append-only file, not in RAM.

An event is {"seq", "epoch_s", "ms", "kind", "data"}. seq increases by one per event and is
never reused, also across restarts: restore() continues after the highest seq in the file.

RAM holds only counters (next_seq, the highest seq written, where the last `since` stopped);
the events are read back from the file one line at a time (Store.iter_events, since()). The
file holds up to the store's events_max_lines lines; past that it is compacted to the last
`capacity`. Readable are always the last `capacity` lines, as a ring buffer of that size would
keep them, so `log` answers the same before and after a compaction.

In case the log file is lost (or its newest lines are), a small record (SEQ_RECORD) reserves
seqs ahead: it is rewritten once every RESERVE events with the first seq not yet reserved,
before any line with a seq at or past the previous reservation is appended. restore() does not
start below it when the file cannot vouch for its highest seq.

Resident is what runs at every event (new, append, add); the boot scan (restore), reading the
log back (since, events) and compaction are in pumpcore.evlog, a transient module imported
inside the methods below for the call (see pumpcore.app.drop_transient): nothing of it is kept
here, since() keeps its place in the file as ints.
"""

from pumpcore import const

SEQ_RECORD = "evseq"
RESERVE = const(100)



class EventLog:
    def __init__(self, store, capacity=200):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError("capacity must be an integer >= 1")
        self.store = store
        self.capacity = capacity
        self.next_seq = 1
        self.last_seq = 0  # highest seq appended to (or found in) the file, 0 if none
        self._reserved = 0  # seqs below this are covered by the SEQ_RECORD on file
        # where the last since() stopped: lines before byte _h_off (the first _h_line lines)
        # all have seq < _h_seq; valid while the file is not rewritten (store.events_gen)
        self._h_seq = 0
        self._h_off = 0
        self._h_line = 0
        self._h_gen = -1

    def __len__(self):
        """Events readable (lines in the file, at most capacity)."""
        n = self.store.event_lines()
        return n if n < self.capacity else self.capacity

    # ------------------------------------------------------------------ writing
    def new(self, kind, data, epoch_s, now_ms):
        """A new event with the next seq (not written yet: append() it)."""
        if not isinstance(kind, str):
            raise ValueError("kind must be a string")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise ValueError("data must be a dict")
        ev = {"seq": self.next_seq, "epoch_s": epoch_s, "ms": now_ms, "kind": kind, "data": data}
        self.next_seq += 1
        return ev

    def append(self, ev):
        """Write an event to the file (reserving seqs first when needed) and compact the file
        when it has grown past its bound. OSError if the filesystem fails."""
        st = self.store
        s = ev["seq"]
        if s >= self._reserved:
            st.save(SEQ_RECORD, {"next_seq": s + RESERVE})
            self._reserved = s + RESERVE
        due = st.append_event(ev)
        if s > self.last_seq:
            self.last_seq = s
        if due:
            st.compact_events(self.capacity)

    def add(self, kind, data, epoch_s, now_ms):
        """new() then append(). Returns the event dict."""
        ev = self.new(kind, data, epoch_s, now_ms)
        self.append(ev)
        return ev

    # ------------------------------------------------------------------ reading
    def events(self):
        """The readable events, oldest first: a generator reading the file line by line
        (consume it, do not keep it: it holds the transient pumpcore.evlog)."""
        from pumpcore import evlog

        return self.store.iter_events(evlog.first_readable(self))

    def since(self, seq=0, limit=50, budget=None):
        """Events with seq >= `seq`, oldest first, at most `limit` (None: capacity), and, with
        a `budget`, no more than fit in that many bytes of canonical JSON with a separator
        each (at least one). Returns (events, next): `next` is the seq to ask for next time
        (after the last returned event, the seq of the first one left out for the budget, or
        next_seq when nothing was returned). Reads the file line by line and parses only the
        lines returned; starts where the previous call stopped when it can (_h_*)."""
        from pumpcore import evlog

        return evlog.since(self, seq, limit, budget)

    # ------------------------------------------------------------------ boot
    def restore(self, next_seq=1):
        """At boot: scan the file (Store.scan_events: counts its lines, drops torn or corrupt
        ones) and continue after the highest seq in it. next_seq never goes below the given
        one, nor below the seqs reserved on file when the file cannot vouch for its highest
        seq (no good line in it, or a bad line other than a torn last one). OSError if the
        filesystem fails (next_seq is then already past the reservation). Returns self."""
        from pumpcore import evlog

        return evlog.restore(self, next_seq)

    def to_dict(self):
        return {"capacity": self.capacity, "next_seq": self.next_seq}
