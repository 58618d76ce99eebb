"""The event log: the last `capacity` events, kept in the store's append-only file, not in RAM.

An event is {"seq", "epoch_s", "ms", "kind", "data"}. seq increases by one per event and is
never reused, also across restarts: restore() continues after the highest seq in the file.

RAM holds only counters (next_seq, the highest seq written, where the last `since` stopped);
the events are read back from the file one line at a time (pumpcore.evlog). The
file holds up to the store's events_max_lines lines; past that it is compacted to the last
`capacity`. Readable are always the last `capacity` lines, as a ring buffer of that size would
keep them, so `log` answers the same before and after a compaction.

In case the log file is lost (or its newest lines are), a small record (SEQ_RECORD) reserves
seqs ahead: it is rewritten once every RESERVE events with the first seq not yet reserved,
before any line with a seq at or past the previous reservation is appended. restore() does not
start below it when the file cannot vouch for its highest seq.

Resident is what runs at every event (new, append, add); the boot scan (evlog.restore),
reading the log back (evlog.since, evlog.events) and compaction are in pumpcore.evlog, a
per-call module (pumpcore.loader) its callers import; its paging place is plain ints here.
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
        self.reserved = 0  # seqs below this are covered by the SEQ_RECORD on file
        # where the last page (pumpcore.evlog.since) stopped: lines before byte page_off (the
        # first page_line lines) all have seq < page_seq; valid while the file is not
        # rewritten (store.events_gen == page_gen)
        self.page_seq = 0
        self.page_off = 0
        self.page_line = 0
        self.page_gen = -1

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
        if s >= self.reserved:
            st.save(SEQ_RECORD, {"next_seq": s + RESERVE})
            self.reserved = s + RESERVE
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

    def to_dict(self):
        return {"capacity": self.capacity, "next_seq": self.next_seq}
