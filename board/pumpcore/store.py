"""Records on the filesystem, each protected by a CRC32.

A record file holds exactly one line: `<canonical json>*<crc32 as 8 lowercase hex>\\n`.
save() writes `name.tmp` and renames it over `name` (atomic on littlefs and POSIX): one
open/write/close/rename, no directory scan. load() rejects anything that is not exactly that
form (a flipped bit anywhere, a truncation, a missing newline) with CorruptRecord.

The event log is an append-only file of such lines. load_events() skips (and counts) lines
that fail their CRC, typically a torn last line after a power cut, and then rewrites the
file without them so new lines do not get glued to a torn one. compact_events() rewrites the
file atomically; append_event() says when the file has grown past its bound.

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
_LINE_MAX = const(4096)  # longest event line load_events() reads as one line


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


def decode(line, name="record"):
    """The object in one record line (bytes, with its newline); CorruptRecord if the line is
    not exactly what encode() makes."""
    n = len(line)
    if n < 11 or line[n - 1] != 0x0A or line[n - 10] != 0x2A:  # "\n", "*"
        raise CorruptRecord(name, "truncated or malformed")
    body = line[: n - 10]
    if line[n - 9 : n - 1] != crc_hex(body).encode():
        raise CorruptRecord(name, "CRC mismatch")
    try:
        return json.loads(body.decode())
    except (ValueError, UnicodeError) as e:
        raise CorruptRecord(name, "unparseable: %s" % (e,)) from None


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
        self.events_skipped = 0  # bad lines dropped by the last load_events()

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

    def _write_atomic(self, name, data):
        """Write bytes (or a list of byte chunks, written one by one) to name.tmp, then
        rename it over name."""
        path = self.path(name)
        tmp = path + ".tmp"
        try:
            f = open(tmp, "wb")
        except OSError:
            self._dir_ok = False
            self._mkdirs()
            f = open(tmp, "wb")
        try:
            if isinstance(data, list):
                for chunk in data:
                    f.write(chunk)
            else:
                f.write(data)
        finally:
            f.close()
        try:
            os.rename(tmp, path)
        except OSError:
            # a filesystem whose rename does not replace (FAT): remove then rename; load()
            # recovers from the .tmp if power fails in between
            try:
                os.remove(path)
            except OSError:
                pass
            os.rename(tmp, path)

    # --- records ----------------------------------------------------------------------------

    def save(self, name, obj):
        """Write a record atomically (name.tmp then rename over name)."""
        if not self._dir_ok:
            self._mkdirs()
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

    # --- event log --------------------------------------------------------------------------

    def append_event(self, ev):
        """Append one event line. Returns True when the log has grown past events_max_lines
        and should be compacted (compact_events with the events to keep)."""
        line = encode(ev)
        if self._event_lines is None:
            self._event_lines = self._count_lines()
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
        if self._event_lines is None:
            self._event_lines = self._count_lines()
        return self._event_lines > self.events_max_lines

    def compact_events(self, events):
        """Replace the event log by these events, atomically."""
        if not self._dir_ok:
            self._mkdirs()
        # line by line: joining the whole log (tens of KB) needs a block a board heap lacks
        parts = [encode(ev) for ev in events]
        self._write_atomic(self.events_name, parts)
        self._event_lines = len(parts)

    def _count_lines(self):
        try:
            f = open(self.path(self.events_name), "rb")
        except OSError:
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

    def load_events(self, keep=None):
        """Events in the log, oldest first (only the last `keep` if given). Lines that fail
        their check (a torn last line) are skipped; their number is returned and kept in
        events_skipped, and the file is rewritten without them. Returns (events, skipped)."""
        path = self.path(self.events_name)
        try:
            f = open(path, "rb")
        except OSError as e:
            if not _missing(e):
                raise
            self._event_lines = 0
            self.events_skipped = 0
            return [], 0
        events = []
        skipped = 0
        total = 0
        try:
            while True:
                line = f.readline(_LINE_MAX)
                if not line:
                    break
                total += 1
                if line[-1] != 0x0A:
                    # torn (or overlong) line: drop the rest of it
                    while line and line[-1] != 0x0A:
                        line = f.readline(_LINE_MAX)
                    skipped += 1
                    continue
                try:
                    ev = decode(line, self.events_name)
                except CorruptRecord:
                    skipped += 1
                    continue
                if not isinstance(ev, dict):
                    skipped += 1
                    continue
                events.append(ev)
                if keep is not None and len(events) > keep:
                    events.pop(0)
        finally:
            f.close()
        self._event_lines = total
        self.events_skipped = skipped
        if skipped:
            self.compact_events(events)
        return events, skipped
