"""Records on the filesystem, each protected by a CRC32.

A record file holds exactly one line: `<canonical json>*<crc32 as 8 lowercase hex>\\n`.
save() writes `name.tmp` and renames it over `name` (atomic on littlefs and POSIX): one
open/write/close/rename, no directory scan. load() rejects anything that is not exactly that
form (a flipped bit anywhere, a truncation, a missing newline) with CorruptRecord.

The event log is an append-only file of such lines, one event each, with strictly increasing
"seq". It is only ever streamed, one line at a time (readline with a length limit): nothing
holds the whole log, or a list of its lines, in RAM.
  append_event()   appends one line; says when the file has grown past events_max_lines
  compact_events() copies the last `keep` good lines to name.tmp and renames it over the log
  scan_events()    at boot: counts the lines, finds the highest good seq, and drops the lines
                   that fail their check (typically a torn last line after a power cut) by the
                   same streamed rewrite, so new lines do not get glued to a torn one
  iter_events()    the good events, oldest first (a generator)

Only os functions the MicroPython ports have: open, rename, remove, stat, mkdir.
"""

import json
import os

from pumpcore.canon import crc_hex, dumps

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_ENOENT = const(2)
_LINE_MAX = const(4096)  # longest event line read as one line (longer ones are dropped)
_SEQ_KEY = b'"seq":'


class StoreError(Exception):
    pass


class CorruptRecord(StoreError):
    def __init__(self, name, why="CRC mismatch"):
        super().__init__("corrupt record %s: %s" % (name, why))
        self.name = name
        self.why = why


def encode(obj):
    """One record line (bytes): canonical JSON, '*', CRC32 hex, newline."""
    body = dumps(obj).encode()
    return body + b"*" + crc_hex(body).encode() + b"\n"


def _check(line, name):
    """Raise CorruptRecord unless line (bytes, with its newline) is exactly what encode()
    makes, up to the JSON: the form and the CRC."""
    n = len(line)
    if n < 11 or line[n - 1] != 0x0A or line[n - 10] != 0x2A:  # "\n", "*"
        raise CorruptRecord(name, "truncated or malformed")
    if line[n - 9 : n - 1] != crc_hex(line[: n - 10]).encode():
        raise CorruptRecord(name, "CRC mismatch")


def decode(line, name="record"):
    """The object in one record line (bytes, with its newline); CorruptRecord if the line is
    not exactly what encode() makes."""
    _check(line, name)
    try:
        return json.loads(line[: len(line) - 10].decode())
    except (ValueError, UnicodeError) as e:
        raise CorruptRecord(name, "unparseable: %s" % (e,)) from None


def good_line(line):
    """True if the line passes its check (form and CRC; the JSON is not parsed)."""
    try:
        _check(line, "")
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
    line = f.readline(_LINE_MAX)
    if len(line) < _LINE_MAX or line[-1] == 0x0A:
        return line, len(line)
    n = len(line)
    while line and line[-1] != 0x0A:
        line = f.readline(_LINE_MAX)
        n += len(line)
    return None, n


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


def _missing(e):
    return e.args and e.args[0] == _ENOENT


class Store:
    def __init__(self, root="data", events_name="events.log", events_max_lines=400):
        self.root = root
        self._prefix = (root + "/") if root and not root.endswith("/") else root
        self.events_name = events_name
        self.events_max_lines = events_max_lines
        self._dir_ok = False
        self._event_lines = None  # lines in the event log, None until counted
        self.events_skipped = 0  # bad lines dropped by the last scan_events()
        self.events_torn = False  # ... and whether the last line was torn (no newline)
        self.events_gen = 0  # bumped whenever the event log is rewritten or removed

    def path(self, name):
        if not name or "/" in name:
            raise StoreError("bad record name %r" % (name,))
        return self._prefix + name

    def _mkdirs(self):
        if self._dir_ok or not self.root:
            return
        parts = self.root.split("/")
        cur = ""
        for i, p in enumerate(parts):
            cur = p if i == 0 else cur + "/" + p
            if not p:
                continue
            try:
                os.mkdir(cur)
            except OSError:
                pass  # exists (or a real problem the write will report)
        self._dir_ok = True

    def _open_tmp(self, name):
        """name.tmp opened for writing (the directory made if needed)."""
        tmp = self.path(name) + ".tmp"
        if not self._dir_ok:
            self._mkdirs()
        try:
            return open(tmp, "wb")
        except OSError:
            self._dir_ok = False
            self._mkdirs()
            return open(tmp, "wb")

    def _commit(self, name):
        """Rename name.tmp over name."""
        path = self.path(name)
        tmp = path + ".tmp"
        try:
            os.rename(tmp, path)
        except OSError:
            # a filesystem whose rename does not replace (FAT): remove then rename; load()
            # and scan_events() recover from the .tmp if power fails in between
            try:
                os.remove(path)
            except OSError:
                pass
            os.rename(tmp, path)

    def _write_atomic(self, name, data):
        """Write bytes to name.tmp, then rename it over name."""
        f = self._open_tmp(name)
        try:
            f.write(data)
        finally:
            f.close()
        self._commit(name)

    # --- records ----------------------------------------------------------------------------

    def save(self, name, obj):
        """Write a record atomically (name.tmp then rename over name)."""
        self._write_atomic(name, encode(obj))

    def _read(self, path):
        f = open(path, "rb")
        try:
            return f.read()
        finally:
            f.close()

    def load(self, name):
        """The saved object, None if there is no record, CorruptRecord if it fails its check."""
        path = self.path(name)
        try:
            data = self._read(path)
        except OSError as e:
            if not _missing(e):
                raise
            # a complete name.tmp with no name: power failed between remove and rename
            try:
                data = self._read(path + ".tmp")
            except OSError:
                return None
            try:
                return decode(data, name)
            except CorruptRecord:
                return None  # a torn first write: nothing was ever committed
        return decode(data, name)

    def exists(self, name):
        try:
            os.stat(self.path(name))
            return True
        except OSError:
            return False

    def remove(self, name):
        """Delete a record (and any leftover name.tmp); missing is fine."""
        path = self.path(name)
        for p in (path, path + ".tmp"):
            try:
                os.remove(p)
            except OSError:
                pass
        if name == self.events_name:
            self._event_lines = 0
            self.events_gen += 1

    # --- event log --------------------------------------------------------------------------

    def open_events(self):
        """The event log opened for reading, None if there is none."""
        try:
            return open(self.path(self.events_name), "rb")
        except OSError as e:
            if not _missing(e):
                raise
            return None

    def event_lines(self):
        """Lines in the event log (counted once, then kept up to date)."""
        if self._event_lines is None:
            self._event_lines = self._count_lines()
        return self._event_lines

    def append_event(self, ev):
        """Append one event line. Returns True when the log has grown past events_max_lines
        and should be compacted (compact_events)."""
        line = encode(ev)
        self.event_lines()
        if not self._dir_ok:
            self._mkdirs()
        f = open(self.path(self.events_name), "ab")
        try:
            f.write(line)
        finally:
            f.close()
        self._event_lines += 1
        return self._event_lines > self.events_max_lines

    def compaction_due(self):
        return self.event_lines() > self.events_max_lines

    def compact_events(self, keep):
        """Keep only the last `keep` lines of the event log (those that pass their check):
        streamed into name.tmp, line by line, which is then renamed over the log. Returns
        the lines kept."""
        skip = self.event_lines() - keep
        return self._rewrite_events(skip if skip > 0 else 0)

    def _rewrite_events(self, skip):
        """Copy the good lines (complete, CRC right, seq above the previous one) after the
        first `skip` lines of the event log to name.tmp, one at a time, and rename it over the
        log. Returns the lines written."""
        src = self.open_events()
        if src is None:
            self._event_lines = 0
            return 0
        kept = 0
        try:
            dst = self._open_tmp(self.events_name)
            try:
                top = 0
                while True:
                    line, n = read_line(src)
                    if not n:
                        break
                    if skip > 0:
                        skip -= 1
                        continue
                    s, _ = event_seq(line)
                    if s is None or s <= top:
                        continue
                    top = s
                    dst.write(line)
                    kept += 1
            finally:
                dst.close()
        finally:
            src.close()
        self._commit(self.events_name)
        self._event_lines = kept
        self.events_gen += 1
        return kept

    def _count_lines(self):
        f = self.open_events()
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

    def scan_events(self):
        """At boot: count the lines of the event log and find its highest good seq, reading
        one line at a time. Lines that fail their check (a torn last line after a power cut, a
        flipped bit) or do not increase the seq are dropped by a streamed rewrite; their number
        is kept in events_skipped (events_torn: the last line was torn). Returns
        (lines, highest seq or 0)."""
        path = self.path(self.events_name)
        f = self.open_events()
        if f is None:
            # a complete name.tmp and no log: power failed between remove and rename
            # (compaction on a filesystem whose rename does not replace)
            try:
                os.rename(path + ".tmp", path)
                f = self.open_events()
            except OSError:
                pass
        self.events_skipped = 0
        self.events_torn = False
        if f is None:
            self._event_lines = 0
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
        self._event_lines = total
        self.events_skipped = skipped
        self.events_torn = torn
        if skipped:
            total = self._rewrite_events(0)
        return total, top

    def iter_events(self, skip=0):
        """The good events of the log (strictly increasing seq), oldest first, after its first
        `skip` lines: a generator that reads one line at a time."""
        f = self.open_events()
        if f is None:
            return
        try:
            top = 0
            while True:
                line, n = read_line(f)
                if not n:
                    break
                if skip > 0:
                    skip -= 1
                    continue
                s, ev = event_seq(line)
                if s is None or s <= top:
                    continue
                if ev is None:
                    try:
                        ev = decode(line, self.events_name)
                    except CorruptRecord:
                        continue
                top = s
                yield ev
        finally:
            f.close()
