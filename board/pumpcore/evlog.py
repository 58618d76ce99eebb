"""The rarely used code of the event log and the store: the boot scan and its repair,
compaction, reading the log back (`log`, EventLog.since/events), counting its lines, a record's
.tmp recovery, making the data directory, removing a record.

Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Functions reading the
Store or the EventLog and returning values: the Store assigns its own counts (Store._mkdirs,
remove, compact_events), the EventLog its own seqs (EventLog.load). Generators from here
(iter_events) are consumed by their caller, never stored.

An event line is what Store.append_event writes: a record line (pumpcore.store.encode) of an
event, with strictly increasing "seq". The log is only ever streamed, one line at a time
(readline with a length limit): nothing holds the whole log, or a list of its lines, in RAM.
"""

import os

from pumpcore.canon import CorruptRecord, decode
from pumpcore.events import SEQ_RECORD
from pumpcore.evread import (  # noqa: F401  (re-exported: reading lines, the log's pages)
    event_seq,
    first_readable,
    good_line,
    line_seq,
    open_events,
    read_line,
    since,
)

# ------------------------------------------------------------------ the Store's files


def mkdirs(root):
    """Store._mkdirs: make the directory root and its parents (those that exist are fine).
    True if there was one to make (root is not "")."""
    if not root:
        return False
    parts = root.split("/")
    cur = ""
    for i, p in enumerate(parts):
        cur = p if i == 0 else cur + "/" + p
        if not p:
            continue
        try:
            os.mkdir(cur)
        except OSError:
            pass  # exists (or a real problem the write will report)
    return True


def remove(path):
    """Store.remove: delete the file at path and any leftover path.tmp; missing is fine."""
    for p in (path, path + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


def load_tmp(st, name):
    """Store.load of a record with no file: the object in a complete name.tmp (power failed
    between remove and rename), else None (a torn first write: nothing was ever committed)."""
    try:
        data = st.read(st.path(name) + ".tmp")
    except OSError:
        return None
    try:
        return decode(data, name)
    except CorruptRecord:
        return None


def load_gen(st, name, gen):
    """At boot: the record `name` of generation `gen` (what the head names for it), from name,
    or from a name.new that was committed but not yet renamed (Store.commit: power failed
    after the head was saved), which is then renamed over name. CorruptRecord if neither holds
    that generation: a record missing, or left from another set, is corruption."""
    rec = st.load(name)
    if isinstance(rec, dict) and rec.get("gen") == gen:
        return rec
    path = st.path(name)
    try:
        new = decode(st.read(path + ".new"), name)
    except (OSError, CorruptRecord):
        new = None
    if isinstance(new, dict) and new.get("gen") == gen:
        st.rename(path + ".new", path)
        return new
    if rec is None:
        raise CorruptRecord(name, "missing")
    raise CorruptRecord(name, "generation %r, the head says %r"
                        % (rec.get("gen") if isinstance(rec, dict) else None, gen))


def any_record(st, names):
    """True if any of these records is on the filesystem (a .new alone is not: it was never
    committed)."""
    for n in names:
        try:
            os.stat(st.path(n))
            return True
        except OSError:
            pass
    return False


def count_lines(st):
    """Lines in the event log, read 512 bytes at a time."""
    f = open_events(st)
    if f is None:
        return 0
    n = 0
    try:
        while True:
            chunk = f.read(512)
            if not chunk:
                break
            n += chunk.count(b"\n")
    finally:
        f.close()
    return n


def _good_lines(f, skip):
    """(line, seq, event or None) of each good line (complete, CRC right, seq above the
    previous good one) of the open log f after its first `skip` lines, one at a time."""
    top = 0
    while True:
        line, n = read_line(f)
        if not n:
            return
        if skip > 0:
            skip -= 1
            continue
        s, ev = event_seq(line)
        if s is None or s <= top:
            continue
        top = s
        yield line, s, ev


def rewrite(st, skip):
    """Store.compact_events: copy the good lines (complete, CRC right, seq above the previous
    one) after the first `skip` lines of the event log to name.tmp, one at a time, and rename
    it over the log. Returns the lines written (0 if there is no log)."""
    src = open_events(st)
    if src is None:
        return 0
    kept = 0
    try:
        dst = st.open_w(st.path(st.events_name) + ".tmp")
        try:
            for line, _, _ in _good_lines(src, skip):
                dst.write(line)
                kept += 1
        finally:
            dst.close()
    finally:
        src.close()
    st.commit_tmp(st.events_name)
    return kept


def scan(st):
    """At boot: count the lines, find the highest good seq, drop the bad lines (through
    Store.compact_events: a streamed rewrite). Returns (lines, highest seq or 0, bad lines
    dropped, whether the last line was torn)."""
    f = open_events(st)
    if f is None:
        # a complete name.tmp and no log: power failed between remove and rename
        # (compaction on a filesystem whose rename does not replace)
        path = st.path(st.events_name)
        try:
            os.rename(path + ".tmp", path)
            f = open_events(st)
        except OSError:
            pass
    if f is None:
        return 0, 0, 0, False
    total = 0
    top = 0
    skipped = 0
    torn = False
    try:
        while True:
            line, n = read_line(f)
            if not n:
                break
            total += 1
            torn = False
            s, _ = event_seq(line)
            if s is None or s <= top:
                skipped += 1
                torn = line is not None and line[-1] != 0x0A
                continue
            top = s
    finally:
        f.close()
    if skipped:
        total = st.compact_events(total)  # all the good lines
    return total, top, skipped, torn


def iter_events(st, skip=0):
    """The good events (strictly increasing seq), oldest first, after the
    first `skip` lines; a generator reading one line at a time."""
    f = open_events(st)
    if f is None:
        return
    try:
        for line, _, ev in _good_lines(f, skip):
            if ev is None:
                try:
                    ev = decode(line, st.events_name)
                except CorruptRecord:
                    continue
            yield ev
    finally:
        f.close()


# ------------------------------------------------------------------ the EventLog


def events(log):
    """The readable events, oldest first: a generator reading the file line by line (consume
    it, do not keep it)."""
    return iter_events(log.store, first_readable(log))


def restore(log, next_seq=1):
    """At boot: scan the file (scan: counts its lines, drops torn or corrupt ones) and
    continue after the highest seq in it. next_seq never goes below the given one, nor below
    the seqs reserved on file when the file cannot vouch for its highest seq (no good line in
    it, a bad line other than a torn last one, or a filesystem failing the scan). Returns the
    EventLog's state for EventLog.load: (next_seq, last_seq, reserved, page_seq, page_off,
    page_line, page_gen). OSError if the reservation's record cannot be read."""
    st = log.store
    try:
        rec = st.load(SEQ_RECORD)
    except CorruptRecord:
        rec = None
    reserved = rec.get("next_seq") if isinstance(rec, dict) else None
    if not isinstance(reserved, int):
        reserved = 0
    nxt = next_seq if next_seq > reserved else reserved
    if nxt < 1:
        nxt = 1
    try:
        _, top, skipped, torn = scan(st)
        st.event_lines()  # the Store counts its lines now, while this module is loaded
    except OSError:
        return nxt, 0, reserved, 0, 0, 0, -1  # no seq below the reservation is used again
    bad = skipped - (1 if torn else 0)
    if top and not bad:
        # the file vouches for its highest seq: no gap after a normal restart
        nxt = top + 1 if top + 1 > next_seq else next_seq
    elif top + 1 > nxt:
        nxt = top + 1
    # (next_seq, last_seq, reserved, page_seq, page_off, page_line, page_gen): no page yet
    return nxt, top, reserved, 0, 0, 0, -1
