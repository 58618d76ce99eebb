"""Records on the filesystem, each protected by a CRC32.

A record file holds exactly one line: `<json>*<crc32 as 8 lowercase hex>\\n`, the CRC over the
bytes before the `*`. Records are written by the runtime's json (write_record, save_small: no
need for canonical bytes, the CRC is of what was written); event lines are canonical (encode,
write_line), evlog reads their seq from the text.
save() writes `name.tmp` and renames it over `name` (atomic on littlefs and POSIX): one
open/write/close/rename, no directory scan. load() rejects anything that is not exactly that
form (a flipped bit anywhere, a truncation, a missing newline) with CorruptRecord.

The event log is an append-only file of such lines, one event each, with strictly increasing
"seq". It is only ever streamed, one line at a time (readline with a length limit): nothing
holds the whole log, or a list of its lines, in RAM.
  append_event()   appends one line; says when the file has grown past events_max_lines
  compact_events() copies the last `keep` good lines to name.tmp and renames it over the log
  evlog.scan()     at boot: counts the lines, finds the highest good seq, and drops the lines
                   that fail their check (typically a torn last line after a power cut) by
                   compact_events, so new lines do not get glued to a torn one
  evlog.iter_events()  the good events, oldest first (a generator)
What runs at every step stays here (save, load, append_event); the rest (the scan, compaction,
reading the log back, counting its lines, a .tmp recovery, making the directory, remove) is in
pumpcore.evlog, a per-call module (pumpcore.loader).

Only os functions the MicroPython ports have: open, rename, remove, stat, mkdir.
"""

import gc
import json
import os
from binascii import crc32

from pumpcore import const
from pumpcore.canon import (  # noqa: F401  (the record line: re-exported)
    CorruptRecord,
    StoreError,
    check_line,
    crc_hex,
    decode,
    dumps,
    write,
)

_ENOENT = const(2)


def encode(obj):
    """One record line (bytes): canonical JSON, '*', CRC32 hex, newline."""
    body = dumps(obj).encode()
    return body + b"*" + crc_hex(body).encode() + b"\n"


def write_line(f, obj):
    """Write encode(obj) to the open file f in chunks with a running CRC (canon.write):
    nothing the size of the whole record is built."""
    f.write(b"*%08x\n" % write(obj, f.write))


def write_record(f, obj):
    """Write one record line of the dict obj to the open file f, made by the runtime's
    json.dumps one value at a time, four levels deep (about thirty times faster than the
    canonical encoder on MicroPython): dicts and lists down to the fourth level are written
    item by item, so no piece is larger than the largest value below that (a number, a
    string). A long running heap is fragmented: one piece the size of `last_bolus` or the
    limiter's ledger (about 650 bytes) failed with 11 KB free in a 130 KB heap, and at two
    levels a 368-byte item with 13 KB free at 128 KB. A record's bytes need not be canonical: load() checks the CRC of the bytes as
    written and parses them with json. Event lines stay canonical (write_line): evlog reads
    their seq from the text."""
    f.write(b"*%08x\n" % (_write_value(f, obj, 0, 4) & 0xFFFFFFFF))


def _write_value(f, v, crc, depth):
    """Write the JSON of v to f, a dict or list `depth` levels deep item by item; returns the
    running CRC32 of what was written."""
    if depth and isinstance(v, dict):
        sep = b"{"
        for k in v:
            crc = _put(f, sep + json.dumps(k).encode() + b":", crc)
            crc = _write_value(f, v[k], crc, depth - 1)
            sep = b","
        return _put(f, b"}" if sep == b"," else b"{}", crc)
    if depth and isinstance(v, list):
        sep = b"["
        for x in v:
            crc = _put(f, sep, crc)
            crc = _write_value(f, x, crc, depth - 1)
            sep = b","
        return _put(f, b"]" if sep == b"," else b"[]", crc)
    return _put(f, json.dumps(v).encode(), crc)


def _put(f, data, crc):
    f.write(data)
    return crc32(data, crc)


def _missing(e):
    return e.args and e.args[0] == _ENOENT


class Store:
    def __init__(self, root="data", events_name="events.log", events_max_lines=400):
        self.root = root
        self._prefix = (root + "/") if root and not root.endswith("/") else root
        self.events_name = events_name
        self.events_max_lines = events_max_lines
        self.dir_ok = False
        self.n_event_lines = None  # lines in the event log, None until counted
        self.events_gen = 0  # bumped whenever the event log is rewritten or removed

    def path(self, name):
        if not name or "/" in name:
            raise StoreError("bad record name %r" % (name,))
        return self._prefix + name

    def _mkdirs(self):
        """Make the directory and its parents (the first write after boot, a failed open)."""
        from pumpcore import evlog

        self.dir_ok = evlog.mkdirs(self.root)

    def open_w(self, path):
        """path opened for writing (the directory made if needed)."""
        if not self.dir_ok:
            self._mkdirs()
        try:
            return open(path, "wb")
        except OSError:
            self.dir_ok = False
            self._mkdirs()
            return open(path, "wb")

    def rename(self, src, path):
        """Rename src over path."""
        try:
            os.rename(src, path)
        except OSError:
            # a filesystem whose rename does not replace (FAT): remove then rename; load()
            # and pumpcore.evlog.scan recover from the .tmp if power fails in between
            try:
                os.remove(path)
            except OSError:
                pass
            os.rename(src, path)

    def commit_tmp(self, name):
        """Rename name.tmp over name."""
        path = self.path(name)
        self.rename(path + ".tmp", path)

    def _write_file(self, path, write):
        """write(f) into the file at path (made or truncated)."""
        f = self.open_w(path)
        try:
            write(f)
        finally:
            f.close()

    def _write_atomic(self, name, write):
        """write(f) into name.tmp, then rename it over name."""
        self._write_file(self.path(name) + ".tmp", write)
        self.commit_tmp(name)

    # --- records ----------------------------------------------------------------------------

    def save(self, name, obj):
        """Write a record atomically (name.tmp then rename over name)."""
        self._write_atomic(name, lambda f: write_line(f, obj))

    def save_small(self, name, obj):
        """save() of a small record written often (the count record before every segment,
        about 700 bytes; the head): the runtime's json.dumps in one piece and one write
        (half the time of write_record's pieces on the unix port), the same atomic write."""
        try:
            body = json.dumps(obj).encode()
            body += b"*%08x\n" % (crc32(body) & 0xFFFFFFFF)
        except MemoryError:
            # a fragmented heap without a block of the record's size (842 bytes failed with
            # 18 KB free at 132 KB): in pieces, as a commit writes (nothing written yet)
            body = None
            gc.collect()
        if body is None:
            self._write_atomic(name, lambda f: write_record(f, obj))
        else:
            self._write_atomic(name, lambda f: f.write(body))

    def commit(self, head, recs):
        """Records that change together, all or none: each (name, obj) of recs is written to
        name.new, then `head` is saved as the record "head" (atomically: the commit point),
        then each name.new is renamed over name. A power cut before the head is saved leaves
        the old set (the .new files are never read: each record carries the generation the
        head names for it); after it, the next boot finishes the renames (pumpcore.evlog
        .load_gen)."""
        for name, obj in recs:
            self._write_file(self.path(name) + ".new", lambda f, o=obj: write_record(f, o))
        self.save_small("head", head)
        for name, _ in recs:
            p = self.path(name)
            self.rename(p + ".new", p)

    def read(self, path):
        f = open(path, "rb")
        try:
            return f.read()
        finally:
            f.close()

    def load(self, name):
        """The saved object, None if there is no record, CorruptRecord if it fails its check."""
        path = self.path(name)
        try:
            data = self.read(path)
        except OSError as e:
            if not _missing(e):
                raise
            # a complete name.tmp with no name: power failed between remove and rename
            from pumpcore import evlog

            return evlog.load_tmp(self, name)
        return decode(data, name)

    def exists(self, name):
        try:
            os.stat(self.path(name))
            return True
        except OSError:
            return False

    def remove(self, name):
        """Delete a record (and any leftover name.tmp); missing is fine."""
        from pumpcore import evlog

        evlog.remove(self.path(name))
        if name == self.events_name:
            self.n_event_lines = 0
            self.events_gen += 1

    # --- event log --------------------------------------------------------------------------

    def event_lines(self):
        """Lines in the event log (counted once, then kept up to date)."""
        if self.n_event_lines is None:
            from pumpcore import evlog

            self.n_event_lines = evlog.count_lines(self)
        return self.n_event_lines

    def append_event(self, ev):
        """Append one event line. Returns True when the log has grown past events_max_lines
        and should be compacted (compact_events)."""
        self.event_lines()
        if not self.dir_ok:
            self._mkdirs()
        f = open(self.path(self.events_name), "ab")
        try:
            write_line(f, ev)
        except BaseException:
            f.write(b"\n")  # end a torn line here: the next event starts a line of its own
            raise
        finally:
            f.close()
        self.n_event_lines += 1
        return self.n_event_lines > self.events_max_lines

    # the rarely used event-log code: in pumpcore.evlog, loaded for the call

    def compact_events(self, keep):
        """Keep only the last `keep` lines of the event log (those that pass their check):
        streamed into name.tmp, line by line, which is then renamed over the log. Returns
        the lines kept."""
        from pumpcore import evlog

        skip = self.event_lines() - keep
        self.n_event_lines = evlog.rewrite(self, skip if skip > 0 else 0)
        self.events_gen += 1
        return self.n_event_lines
