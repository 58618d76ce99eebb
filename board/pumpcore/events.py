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
reading the log back (evread.since, evlog.events) and compaction are in pumpcore.evlog and
pumpcore.evread, per-call modules (pumpcore.loader) their callers import. They return the
EventLog's state (the seqs after the boot scan, the paging place after a page) as plain ints,
which load() assigns.
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
        self.load((1, 0, 0, 0, 0, 0, -1))

    def load(self, st):
        """(next_seq, last_seq, reserved, page_seq, page_off, page_line, page_gen): a new
        log's, or what pumpcore.evlog.restore (the boot scan) or pumpcore.evread.since (a
        page) returned. last_seq: the highest seq appended to (or found in) the file, 0 if
        none; seqs below `reserved` are covered by the SEQ_RECORD on file. Where the last page
        stopped: lines before byte page_off (the first page_line lines) all have seq <
        page_seq; valid while the file is not rewritten (store.events_gen == page_gen)."""
        (self.next_seq, self.last_seq, self.reserved, self.page_seq, self.page_off,
         self.page_line, self.page_gen) = st

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
