import json
import os

from _util import raises, read_bytes, rmtree, tmpdir, write_bytes
from pumpcore import evlog
from pumpcore.evlog import event_seq, line_seq
from pumpcore.store import CorruptRecord, Store, decode, encode, write_line

RECORD = {"plan_crc": "0badf00d", "reservoir_nl": 20_000_000, "steps": 12345, "on": True}


def with_store(fn, **kw):
    d = tmpdir()
    try:
        fn(Store(d + "/data", **kw), d + "/data")
    finally:
        rmtree(d)


class _Chunks:
    """A file that keeps every write apart."""

    def __init__(self):
        self.writes = []

    def write(self, b):
        self.writes.append(bytes(b))


def test_records_are_written_in_pieces_with_the_same_bytes():
    big = {"sched": {"overlays": [[i * 1000, i * 1000 + 600, 86_400_000 + i] for i in range(60)]},
           "s": 'quote " and \\ and \u00e9', "n": None, "t": [True, False, -5, []], "e": {}}
    for obj in (RECORD, big, {}, [], {"a": [{"b": [1, {"c": "d"}]}]}):
        f = _Chunks()
        write_line(f, obj)
        assert b"".join(f.writes) == encode(obj), obj
    f = _Chunks()
    write_line(f, big)
    assert len(encode(big)) > 1000
    # no write (no temporary) near the size of the record
    assert max(len(w) for w in f.writes) < 300, [len(w) for w in f.writes]


def test_save_load_round_trip_and_missing():
    def run(st, root):
        assert st.load("therapy.rec") is None
        st.save("therapy.rec", RECORD)  # creates the directory
        assert st.load("therapy.rec") == RECORD
        assert "therapy.rec.tmp" not in os.listdir(root)
        raw = read_bytes(root + "/therapy.rec")
        assert raw == encode(RECORD)
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1
        st.save("therapy.rec", {"v": 2})  # rename over an existing record
        assert st.load("therapy.rec") == {"v": 2}
        st.remove("therapy.rec")
        assert st.load("therapy.rec") is None
        st.remove("therapy.rec")  # missing is fine

    with_store(run)


def test_every_single_bit_flip_is_detected():
    line = encode({"a": 1, "s": "x*y"})
    for i in range(len(line)):
        for bit in range(8):
            bad = bytearray(line)
            bad[i] ^= 1 << bit
            raises(CorruptRecord, decode, bytes(bad))
    assert decode(line) == {"a": 1, "s": "x*y"}


def test_every_truncation_is_detected():
    line = encode(RECORD)
    for n in range(len(line)):
        raises(CorruptRecord, decode, line[:n])


def test_corrupt_file_raises_with_the_name():
    def run(st, root):
        st.save("calib.rec", {"step_pl": 250000})
        raw = read_bytes(root + "/calib.rec")
        write_bytes(root + "/calib.rec", raw[:-3])
        e = raises(CorruptRecord, st.load, "calib.rec")
        assert e.name == "calib.rec"
        bad = bytearray(raw)
        bad[3] ^= 0x10
        write_bytes(root + "/calib.rec", bytes(bad))
        raises(CorruptRecord, st.load, "calib.rec")
        write_bytes(root + "/calib.rec", b"")
        raises(CorruptRecord, st.load, "calib.rec")

    with_store(run)


def test_leftover_tmp_is_ignored_or_recovered():
    def run(st, root):
        st.save("therapy.rec", {"v": 1})
        # a torn tmp left by a power cut during save: the committed record wins
        write_bytes(root + "/therapy.rec.tmp", encode({"v": 2})[:-4])
        assert st.load("therapy.rec") == {"v": 1}
        # power cut between remove and rename (non-replacing rename): the complete tmp counts
        write_bytes(root + "/therapy.rec.tmp", encode({"v": 3}))
        os.remove(root + "/therapy.rec")
        assert st.load("therapy.rec") == {"v": 3}
        # a torn tmp and no record: nothing was ever committed
        write_bytes(root + "/therapy.rec.tmp", encode({"v": 4})[:-1])
        assert st.load("therapy.rec") is None

    with_store(run)


def test_bad_names():
    st = Store("/nonexistent-root-for-test")
    raises(Exception, st.path, "a/b")
    raises(Exception, st.path, "")


def ev(seq):
    return {"seq": seq, "epoch_s": 1_700_000_000 + seq, "ms": seq, "kind": "k", "data": {"n": seq}}


def seqs(evs):
    return [e["seq"] for e in evs]


def test_event_line_seq_is_read_without_parsing():
    assert line_seq(encode(ev(1234))) == 1234
    # "seq" inside the data or a string does not fool it: canonical JSON puts "seq" last
    tricky = {"seq": 7, "epoch_s": None, "ms": 0, "kind": '"seq":9}', "data": {"seq": 8}}
    assert line_seq(encode(tricky)) == 7 and event_seq(encode(tricky)) == (7, None)
    # lines that do not end like an event: parsed instead, or refused
    assert line_seq(encode({"seq": 3, "z": 1})) is None
    assert event_seq(encode({"seq": 3, "z": 1})) == (3, {"seq": 3, "z": 1})
    assert event_seq(encode({"seq": "3"})) == (None, None)
    assert event_seq(encode([1, 2])) == (None, None)
    assert event_seq(encode(ev(5))[:-2] + b"\n") == (None, None)  # CRC checked
    assert event_seq(None) == (None, None)


def test_event_log_append_and_iterate():
    def run(st, root):
        assert evlog.scan(st) == (0, 0, 0, False)
        assert list(evlog.iter_events(st)) == []
        for s in range(1, 6):
            assert st.append_event(ev(s)) is False
        assert list(evlog.iter_events(st)) == [ev(s) for s in range(1, 6)]
        assert seqs(evlog.iter_events(st, 3)) == [4, 5]  # after the first 3 lines
        st2 = Store(root)
        assert evlog.scan(st2) == (5, 5, 0, False)
        assert st2.event_lines() == 5

    with_store(run)


def test_torn_last_line_is_skipped_counted_and_repaired():
    def run(st, root):
        for s in range(1, 4):
            st.append_event(ev(s))
        path = root + "/events.log"
        raw = read_bytes(path)
        last = len(encode(ev(3)))
        for cut in range(1, last):
            write_bytes(path, raw[: len(raw) - cut])
            st2 = Store(root)
            assert seqs(evlog.iter_events(st2)) == [1, 2], cut  # reading skips it too
            assert evlog.scan(st2) == (2, 2, 1, True), cut
            assert "events.log.tmp" not in os.listdir(root)
            # repaired: the next line is not glued to the torn one
            st2.append_event(ev(4))
            st3 = Store(root)
            assert evlog.scan(st3) == (3, 4, 0, False)
            assert seqs(evlog.iter_events(st3)) == [1, 2, 4]

    with_store(run)


def test_corrupt_middle_line_is_skipped():
    def run(st, root):
        for s in range(1, 4):
            st.append_event(ev(s))
        path = root + "/events.log"
        raw = bytearray(read_bytes(path))
        raw[len(encode(ev(1))) + 5] ^= 0x01  # inside line 2
        write_bytes(path, bytes(raw))
        assert seqs(evlog.iter_events(Store(root))) == [1, 3]
        st2 = Store(root)
        assert evlog.scan(st2) == (2, 3, 1, False)
        assert read_bytes(path) == encode(ev(1)) + encode(ev(3))

    with_store(run)


def test_overlong_line_is_skipped():
    def run(st, root):
        st.append_event(ev(1))
        big = ev(2)
        big["data"] = {"x": "y" * 5000}  # longer than one readline
        st.append_event(big)
        st.append_event(ev(3))
        assert seqs(evlog.iter_events(Store(root))) == [1, 3]
        st2 = Store(root)
        assert evlog.scan(st2) == (2, 3, 1, False)

    with_store(run)


def test_compaction_when_the_log_grows_past_its_bound():
    def run(st, root):
        due = [st.append_event(ev(s)) for s in range(1, 7)]
        assert due == [False, False, False, False, True, True]
        assert st.compact_events(2) == 2
        assert "events.log.tmp" not in os.listdir(root)
        assert read_bytes(root + "/events.log") == encode(ev(5)) + encode(ev(6))
        assert st.event_lines() <= st.events_max_lines
        assert st.append_event(ev(7)) is False
        # a fresh Store counts the existing lines before deciding
        st2 = Store(root, events_max_lines=3)
        assert st2.append_event(ev(8)) is True
        assert seqs(evlog.iter_events(st2)) == [5, 6, 7, 8]
        assert st2.compact_events(10) == 4  # fewer lines than kept: all stay
        assert seqs(evlog.iter_events(st2)) == [5, 6, 7, 8]

    with_store(run, events_max_lines=4)


def test_compaction_drops_bad_lines():
    def run(st, root):
        for s in range(1, 5):
            st.append_event(ev(s))
        path = root + "/events.log"
        raw = bytearray(read_bytes(path))
        raw[len(raw) - len(encode(ev(4))) - 5] ^= 0x01  # inside line 3
        write_bytes(path, bytes(raw))
        assert st.compact_events(3) == 2
        assert read_bytes(path) == encode(ev(2)) + encode(ev(4))
        assert st.event_lines() == 2

    with_store(run)


def test_scan_recovers_the_log_from_a_complete_tmp():
    def run(st, root):
        for s in range(1, 4):
            st.append_event(ev(s))
        path = root + "/events.log"
        # compaction on a non-replacing rename: power failed between remove and rename
        os.rename(path, path + ".tmp")
        st2 = Store(root)
        assert evlog.scan(st2) == (3, 3, 0, False)
        assert seqs(evlog.iter_events(st2)) == [1, 2, 3]
        assert "events.log.tmp" not in os.listdir(root)

    with_store(run)


def test_write_record_writes_a_large_value_item_by_item():
    """A commit's records are written into a long-running, fragmented heap: a piece the size
    of a whole value (the last 24 h of boluses, the limiter's ledger: about 650 bytes) ran out
    of memory with 11 KB free (issue 11, finding 8, at 130 KB). Dicts and lists are written
    item by item, four levels deep; empty ones and nested ones read back."""
    from pumpcore.store import write_record

    last = [["req-%02d" % i, {"dose_ng": 100000, "dur_s": 600, "volume_nl": 10000 + i,
                               "started_epoch_s": 1767236400 + i}] for i in range(8)]
    obj = {"last_bolus": last, "lim": {"h": [[i, 6250 * i] for i in range(4)], "a": None},
           "e": [], "d": {}, "n": [[[1, 2], [3]]], "gen": 3}
    f = _Chunks()
    write_record(f, obj)
    line = b"".join(f.writes)
    assert decode(line) == obj
    assert len(line) > 800
    biggest = max(len(w) for w in f.writes)
    assert biggest <= len(b'"started_epoch_s":') + 1, biggest


def test_save_small_writes_in_pieces_when_the_heap_has_no_block_for_it():
    """The count record (before every segment) is built in one piece for speed; in a
    fragmented heap that piece (842 bytes) ran out of memory with 18 KB free at 132 KB
    (issue 11, finding 8). On MemoryError it is written in pieces, and reads back."""
    from pumpcore import store as store_mod

    class SmallBlocks:  # json whose results longer than 200 characters do not fit
        @staticmethod
        def dumps(v):
            out = json.dumps(v)
            if len(out) > 200:
                raise MemoryError("memory allocation failed")
            return out

    obj = {"steps": 5, "lim": {"h%d" % k: [[i, 6250 * i] for i in range(5)] for k in range(6)},
           "slots": [[480, 1], [1200, 0]], "gen": 9}

    def run(st, root):
        store_mod.json = SmallBlocks
        try:
            st.save_small("count", obj)
        finally:
            store_mod.json = json
        assert st.load("count") == obj
        assert "count.tmp" not in os.listdir(root)

    with_store(run)


def test_a_record_by_write_record_reads_back_and_fails_when_damaged():
    """write_record (the records of a commit and the count record before every segment) is
    the runtime's json, not canonical JSON (about thirty times faster on MicroPython): what
    load() reads back must be the same object, and any flipped bit or cut must fail its
    check as a canonical line does."""
    from pumpcore.store import write_record

    obj = {"steps": 12345, "lim": {"h": [0, 6250, 0], "f": [200000000, 25000000], "a": None},
           "slots": None, "on": True, "s": "x*y \\ \"q\"", "gen": 7}
    f = _Chunks()
    write_record(f, obj)
    line = b"".join(f.writes)
    assert decode(line) == obj and line.endswith(b"\n") and line.count(b"\n") == 1
    assert len(f.writes) > len(obj) and max(len(w) for w in f.writes) < len(line) // 2
    for i in range(len(line) - 1):
        bad = bytearray(line)
        bad[i] ^= 0x04
        assert raises(CorruptRecord, decode, bytes(bad)).name == "record"
    assert raises(CorruptRecord, decode, line[: len(line) // 2]).name == "record"

    def save(st, root):
        st.save_small("count", obj)
        assert st.load("count") == obj
        assert "count.tmp" not in os.listdir(root)

    with_store(save)
