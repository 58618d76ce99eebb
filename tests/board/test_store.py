import os

from _util import raises, read_bytes, rmtree, tmpdir, write_bytes
from pumpcore.store import CorruptRecord, Store, decode, encode

RECORD = {"plan_crc": "0badf00d", "reservoir_nl": 20_000_000, "steps": 12345, "on": True}


def with_store(fn, **kw):
    d = tmpdir()
    try:
        fn(Store(d + "/data", **kw), d + "/data")
    finally:
        rmtree(d)


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


def test_event_log_append_and_load():
    def run(st, root):
        assert st.load_events() == ([], 0)
        for s in range(1, 6):
            assert st.append_event(ev(s)) is False
        events, skipped = st.load_events()
        assert skipped == 0
        assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
        events, _ = st.load_events(keep=2)
        assert [e["seq"] for e in events] == [4, 5]

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
            events, skipped = st2.load_events()
            assert [e["seq"] for e in events] == [1, 2], cut
            assert skipped == 1 and st2.events_skipped == 1
            # repaired: the next line is not glued to the torn one
            st2.append_event(ev(4))
            events, skipped = Store(root).load_events()
            assert [e["seq"] for e in events] == [1, 2, 4] and skipped == 0

    with_store(run)


def test_corrupt_middle_line_is_skipped():
    def run(st, root):
        for s in range(1, 4):
            st.append_event(ev(s))
        path = root + "/events.log"
        raw = bytearray(read_bytes(path))
        raw[len(encode(ev(1))) + 5] ^= 0x01  # inside line 2
        write_bytes(path, bytes(raw))
        events, skipped = Store(root).load_events()
        assert [e["seq"] for e in events] == [1, 3] and skipped == 1

    with_store(run)


def test_compaction_when_the_log_grows_past_its_bound():
    def run(st, root):
        due = [st.append_event(ev(s)) for s in range(1, 7)]
        assert due == [False, False, False, False, True, True]
        st.compact_events([ev(5), ev(6)])
        assert "events.log.tmp" not in os.listdir(root)
        assert st.compaction_due() is False
        assert st.append_event(ev(7)) is False
        # a fresh Store counts the existing lines before deciding
        st2 = Store(root, events_max_lines=3)
        assert st2.append_event(ev(8)) is True
        events, _ = st2.load_events()
        assert [e["seq"] for e in events] == [5, 6, 7, 8]

    with_store(run, events_max_lines=4)
