"""Reading the event log's lines: a line's check and seq, one line at a time from the file,
and the pages of the `log` command (since). Per call (pumpcore.loader): `log` loads this and
pumpcore.logpages, not pumpcore.evlog (the boot scan, compaction and repair, which import
from here), so a page's command needs about 2 KB less heap in a long-running heap.
"""

from pumpcore import const
from pumpcore.canon import CorruptRecord, check_line, decode

_LINE_MAX = const(4096)  # longest event line read as one line (longer ones are dropped)
# read in pieces: an event line is far shorter, and a small heap may have no free block of
# _LINE_MAX bytes at boot or after a restart (issue 11, finding 8)
_PIECE = const(256)
_SEQ_KEY = b'"seq":'


def good_line(line):
    """True if the line passes its check (form and CRC; the JSON is not parsed)."""
    try:
        check_line(line, "")
    except CorruptRecord:
        return False
    return True


def line_seq(line):
    """The seq of an event line without parsing its JSON, or None if the line does not end
    like one (canonical JSON sorts the keys, so an event's "seq" comes last: `"seq":N}`).
    The line's CRC is not checked here."""
    end = len(line) - 11  # the "}" before "*crc\\n"
    if end < 7 or line[end] != 0x7D:
        return None
    i = line.rfind(_SEQ_KEY, 0, end)
    if i < 0:
        return None
    digits = line[i + 6 : end]
    if not digits or not digits.isdigit():
        return None
    return int(digits)


def read_line(f):
    """The next line of an event log: (line, n), n the bytes consumed (0 at the end of the
    file). line is the bytes of one whole line with its newline; a torn last line has none;
    None for a line too long to read as one (the rest of it is consumed); b"" at the end."""
    line = f.readline(_PIECE)
    n = len(line)
    if n < _PIECE or line[-1] == 0x0A:
        return line, n
    parts = [line]
    while line and line[-1] != 0x0A:
        line = f.readline(_PIECE)
        n += len(line)
        if n <= _LINE_MAX:
            parts.append(line)
    if n > _LINE_MAX:
        return None, n
    return b"".join(parts), n


def event_seq(line):
    """(seq, event) of a good event line: event is None when the seq could be read without
    parsing the JSON (parse it with decode() when it is needed). (None, None) if the line is
    not a good event line. The CRC is checked."""
    if line is None or not good_line(line):
        return None, None
    s = line_seq(line)
    if s is not None:
        return s, None
    try:
        ev = decode(line)
    except CorruptRecord:
        return None, None
    s = ev.get("seq") if isinstance(ev, dict) else None
    if not isinstance(s, int) or isinstance(s, bool):
        return None, None
    return s, ev


def open_events(st):
    """The event log opened for reading, None if there is none."""
    try:
        return open(st.path(st.events_name), "rb")
    except OSError as e:
        if not (e.args and e.args[0] == 2):  # ENOENT: no log
            raise
        return None


def first_readable(log):
    """Lines at the start of the file that are no longer readable (past capacity)."""
    n = log.store.event_lines() - log.capacity
    return n if n > 0 else 0


def since(log, seq=0, limit=50, budget=None):
    """Events with seq >= `seq`, oldest first, at most `limit` (None: capacity), and, with a
    `budget`, no more than fit in that many bytes of canonical JSON with a separator each (at
    least one). Returns (events, next, state): `next` is the seq to ask for next time (after
    the last returned event, the seq of the first one left out for the budget, or next_seq
    when nothing was returned). Reads the file line by line and parses only the lines
    returned; starts where the previous call stopped when it can: that place is kept on the
    EventLog as ints (page_seq, page_off, page_line, valid for the file generation page_gen),
    and `state` is the EventLog's state with this page's place for EventLog.load (None: the
    place did not move)."""
    if limit is None:
        limit = log.capacity
    if not isinstance(seq, int) or not isinstance(limit, int) or limit < 0:
        raise ValueError("seq and limit must be integers, limit >= 0")
    out = []
    if not limit:
        return out, log.next_seq, None
    st = log.store
    first = first_readable(log)  # index of the first readable line
    off = 0
    idx = 0
    top = 0
    if log.page_gen == st.events_gen and log.page_seq <= seq:
        off = log.page_off  # every line before it has a seq below page_seq, so below `seq`
        idx = log.page_line
        top = log.page_seq - 1
    f = open_events(st)
    if f is None:
        return out, log.next_seq, None
    nxt = None
    size = 0
    # the hint for the next call: right after the last good line below the next `seq`
    h_seq, h_off, h_line = 0, off, idx
    try:
        if off:
            f.seek(off)
        while True:
            line, n = read_line(f)
            if not n:
                break
            off += n
            idx += 1
            if idx <= first:
                continue
            s, ev = event_seq(line)
            if s is None or s <= top:
                continue
            top = s
            if s < seq:
                h_seq, h_off, h_line = s + 1, off, idx
                continue
            if ev is None:
                try:
                    ev = decode(line, st.events_name)
                except CorruptRecord:
                    continue
            if budget is not None:
                size += len(line) - 9  # its canonical JSON and a separator
                if size > budget and out:
                    nxt = s
                    break
            out.append(ev)
            h_seq, h_off, h_line = s + 1, off, idx
            if len(out) >= limit:
                break
    finally:
        f.close()
    page = None
    if h_seq:
        page = (log.next_seq, log.last_seq, log.reserved, h_seq, h_off, h_line, st.events_gen)
    if nxt is not None:
        return out, nxt, page
    if out:
        return out, out[-1]["seq"] + 1, page
    return out, log.next_seq, page
