"""The rarely used code of the event log and the store: the boot scan and its repair,
compaction, reading the log back (`log`, EventLog.since/events), counting its lines, a record's
.tmp recovery, making the data directory, removing a record.

Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Functions taking the Store or the EventLog;
what lasts between calls (the paging place of since()) is plain ints on the EventLog.
Generators from here (iter_events) are consumed by their caller, never stored.

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


def mkdirs(st):
    """Store._mkdirs: make st.root and its parents (those that exist are fine)."""
    if st.dir_ok or not st.root:
        return
    parts = st.root.split("/")
    cur = ""
    for i, p in enumerate(parts):
        cur = p if i == 0 else cur + "/" + p
        if not p:
            continue
        try:
            os.mkdir(cur)
        except OSError:
            pass  # exists (or a real problem the write will report)
    st.dir_ok = True


def remove(st, name):
    """Store.remove: delete a record (and any leftover name.tmp); missing is fine."""
    path = st.path(name)
    for p in (path, path + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass
    if name == st.events_name:
        st.n_event_lines = 0
        st.events_gen += 1


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
    """Copy the good lines (complete, CRC right, seq above the previous one) after the first
    `skip` lines of the event log to name.tmp, one at a time, and rename it over the log.
    Returns the lines written."""
    src = open_events(st)
    if src is None:
        st.n_event_lines = 0
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
    st.n_event_lines = kept
    st.events_gen += 1
    return kept


def scan(st):
    """At boot: count the lines, find the highest good seq, drop the bad lines by a
    streamed rewrite (events_skipped, events_torn). Returns (lines, highest seq or 0)."""
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
    st.events_skipped = 0
    st.events_torn = False
    if f is None:
        st.n_event_lines = 0
        return 0, 0
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
    st.n_event_lines = total
    st.events_skipped = skipped
    st.events_torn = torn
    if skipped:
        total = rewrite(st, 0)
    return total, top


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
    """At boot: scan the file (scan: counts its lines, drops torn or corrupt
    ones) and continue after the highest seq in it. next_seq never goes below the given one,
    nor below the seqs reserved on file when the file cannot vouch for its highest seq (no
    good line in it, or a bad line other than a torn last one). OSError if the filesystem
    fails (next_seq is then already past the reservation). Returns the EventLog."""
    st = log.store
    try:
        rec = st.load(SEQ_RECORD)
    except CorruptRecord:
        rec = None
    reserved = rec.get("next_seq") if isinstance(rec, dict) else None
    if not isinstance(reserved, int):
        reserved = 0
    log.reserved = reserved
    log.page_gen = -1
    log.next_seq = next_seq if next_seq > reserved else reserved
    if log.next_seq < 1:
        log.next_seq = 1
    _, top = scan(st)
    log.last_seq = top
    bad = st.events_skipped - (1 if st.events_torn else 0)
    nxt = top + 1
    if top and not bad:
        # the file vouches for its highest seq: no gap after a normal restart
        log.next_seq = nxt if nxt > next_seq else next_seq
    elif nxt > log.next_seq:
        log.next_seq = nxt
    return log
