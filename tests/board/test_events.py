"""The event log: kept in the store's file, streamed back, seq never reused, RAM flat."""

import gc
import os
import sys

from _util import forget_module, raises, read_bytes, rmtree, take_output, tmpdir, write_bytes
from pumpcore import canon, evlog, loader
from pumpcore.events import RESERVE, SEQ_RECORD, EventLog
from pumpcore.store import Store, encode

EPOCH = 1_700_000_000


def restored(st, capacity):
    """An EventLog on st after the boot scan (pumpcore.evlog.restore), as the App restores it."""
    log = EventLog(st, capacity)
    log.load(evlog.restore(log))
    return log


def page(log, *args):
    """evread.since, with the EventLog taking the place the page stopped at (as the `log`
    command's pumpcore.logpages does): (events, next)."""
    evs, nxt, st = evlog.since(log, *args)
    if st is not None:
        log.load(st)
    return evs, nxt


def with_log(fn, capacity=200, max_lines=None):
    d = tmpdir()
    try:
        root = d + "/data"
        st = Store(root, events_max_lines=max_lines or 2 * capacity)
        fn(restored(st, capacity), root)
    finally:
        rmtree(d)


def fill(log, n):
    for _ in range(n):
        i = log.next_seq
        log.add("k%d" % i, {"i": i}, EPOCH + i, 1000 + i)


def seqs(evs):
    return [e["seq"] for e in evs]


def reopen(log, root):
    """The log as the next boot sees it."""
    return restored(Store(root, events_max_lines=log.store.events_max_lines), log.capacity)


def test_add_builds_events_with_increasing_seq():
    def run(log, root):
        e1 = log.add("reset", {"cause": "power"}, EPOCH, 12)
        e2 = log.add("refill", None, None, 13)
        assert e1 == {"seq": 1, "epoch_s": EPOCH, "ms": 12, "kind": "reset",
                      "data": {"cause": "power"}}
        assert e2["seq"] == 2 and e2["data"] == {} and e2["epoch_s"] is None
        raises(ValueError, log.add, "x", [1], EPOCH, 0)
        raises(ValueError, log.add, 5, {}, EPOCH, 0)
        assert log.next_seq == 3 and log.last_seq == 2  # refused adds use no seq
        # the events are in the file, one line each, not in RAM
        assert read_bytes(root + "/events.log") == encode(e1) + encode(e2)
        assert list(evlog.events(log)) == [e1, e2]
        assert len(list(evlog.events(log))) == 2
        # new() takes a seq without writing; append() writes it
        e3 = log.new("later", {}, EPOCH, 14)
        assert e3["seq"] == 3 and len(list(evlog.events(log))) == 2
        log.append(e3)
        assert seqs(evlog.events(log)) == [1, 2, 3]

    with_log(run, capacity=4)


def test_the_last_capacity_events_are_readable():
    def run(log, root):
        fill(log, 7)  # the file holds 7 lines (bound 8), 4 are readable
        assert log.store.event_lines() == 7
        assert len(list(evlog.events(log))) == 4
        assert seqs(evlog.events(log)) == [4, 5, 6, 7]
        assert seqs(page(log, 0, None)[0]) == [4, 5, 6, 7]
        assert log.last_seq == 7

    with_log(run, capacity=4)


def test_since_pages_through():
    def run(log, root):
        fill(log, 10)  # readable: seq 3..10
        ev, nxt = page(log, 0, 3)
        assert seqs(ev) == [3, 4, 5] and nxt == 6
        ev, nxt = page(log, nxt, 3)
        assert seqs(ev) == [6, 7, 8] and nxt == 9
        ev, nxt = page(log, nxt, 3)
        assert seqs(ev) == [9, 10] and nxt == 11
        ev, nxt = page(log, nxt, 3)
        assert ev == [] and nxt == 11
        log.add("new", {}, EPOCH, 0)
        ev, nxt = page(log, nxt, 3)
        assert seqs(ev) == [11] and nxt == 12
        ev, nxt = page(log, 7, 0)
        assert ev == [] and nxt == 12
        ev, _ = page(log, 7, None)
        assert seqs(ev) == [7, 8, 9, 10, 11]
        # asking again for older seqs (the remembered place is only a shortcut)
        ev, nxt = page(log, 5, 2)
        assert seqs(ev) == [5, 6] and nxt == 7
        ev, nxt = page(log, 0, 1)
        assert seqs(ev) == [4] and nxt == 5  # seq 3 is past capacity now
        raises(ValueError, page, log, 0, -1)
        raises(ValueError, page, log, "0", 1)

    with_log(run, capacity=8, max_lines=16)


def test_since_from_the_future_resyncs():
    def run(log, root):
        fill(log, 3)
        ev, nxt = page(log, 500, 10)
        assert ev == [] and nxt == 4

    with_log(run)


def test_since_with_a_byte_budget():
    def run(log, root):
        fill(log, 20)
        all_evs = list(evlog.events(log))
        sizes = [len(canon.dumps(e)) + 1 for e in all_evs]
        budget = sizes[0] + sizes[1] + sizes[2] + 1  # three fit, not four
        ev, nxt = page(log, 1, 10, budget)
        assert ev == all_evs[:3] and nxt == 4
        ev, nxt = page(log, nxt, 10, budget)
        assert seqs(ev) == [4, 5, 6] and nxt == 7
        # at least one event, even over the budget
        ev, nxt = page(log, 1, 10, 5)
        assert seqs(ev) == [1] and nxt == 2
        # the budget stops before the limit does
        ev, nxt = page(log, 18, 10, 10_000)
        assert seqs(ev) == [18, 19, 20] and nxt == 21

    with_log(run)


def test_since_across_compaction():
    def run(log, root):
        fill(log, 6)  # at the bound
        ev, nxt = page(log, 0, 2)
        assert seqs(ev) == [3, 4] and nxt == 5
        fill(log, 1)  # 7 lines > 6: compacted to the last 4
        assert log.store.event_lines() == 4
        assert "events.log.tmp" not in os.listdir(root)
        ev, nxt = page(log, nxt, 2)
        assert seqs(ev) == [5, 6] and nxt == 7
        fill(log, 3)
        ev, nxt = page(log, nxt, 50)
        assert seqs(ev) == [7, 8, 9, 10] and nxt == 11
        # a reader that fell behind gets the oldest still kept
        ev, nxt = page(log, 2, 50)
        assert seqs(ev) == [7, 8, 9, 10]

    with_log(run, capacity=4, max_lines=6)


def test_compaction_keeps_the_newest_lines():
    def run(log, root):
        fill(log, 9)  # compacted at the 7th line: 4 kept, then 2 more
        lines = read_bytes(root + "/events.log").split(b"\n")[:-1]
        assert len(lines) == 6 and log.store.event_lines() == 6
        assert seqs(evlog.iter_events(Store(root))) == [4, 5, 6, 7, 8, 9]
        assert seqs(evlog.events(log)) == [6, 7, 8, 9]

    with_log(run, capacity=4, max_lines=6)


def test_seq_continues_after_a_restart():
    def run(log, root):
        fill(log, 5)
        log2 = reopen(log, root)
        assert log2.next_seq == 6  # no gap after a normal restart
        assert seqs(evlog.events(log2)) == [2, 3, 4, 5]
        assert log2.add("after", {}, EPOCH, 0)["seq"] == 6
        # the seqs reserved on file are not rewritten for every event
        assert Store(root).load(SEQ_RECORD) == {"next_seq": 1 + RESERVE}
        assert (log2.capacity, log2.next_seq) == (4, 7)

    with_log(run, capacity=4)


def test_seq_after_a_torn_last_line():
    def run(log, root):
        fill(log, 3)
        path = root + "/events.log"
        raw = read_bytes(path)
        write_bytes(path, raw[:-7])  # power cut while seq 3 was written (never sent)
        log2 = reopen(log, root)
        assert seqs(evlog.events(log2)) == [1, 2]
        assert log2.next_seq == 3  # a torn last line was never sent: its seq is used again
        assert read_bytes(path).count(b"\n") == 2 and log2.store.event_lines() == 2  # dropped
        # repaired: the next line is not glued to the torn one
        log2.add("after", {}, EPOCH, 0)
        assert seqs(evlog.events(reopen(log2, root))) == [1, 2, 3]

    with_log(run)


def test_seq_is_never_reused_when_the_file_is_lost():
    def run(log, root):
        fill(log, 150)  # past a reservation: the record was rewritten at seq 101
        os.remove(root + "/events.log")
        log2 = reopen(log, root)
        assert log2.next_seq >= 151
        assert list(evlog.events(log2)) == []
        ev = log2.add("after", {}, EPOCH, 0)
        assert ev["seq"] >= 151
        # and after the next restart it goes on from the new file
        log3 = reopen(log2, root)
        assert log3.next_seq == ev["seq"] + 1
        assert seqs(page(log3, 0, 5)[0]) == [ev["seq"]]

    with_log(run)


def test_seq_is_never_reused_when_the_newest_lines_are_corrupt():
    def run(log, root):
        fill(log, 5)
        path = root + "/events.log"
        raw = bytearray(read_bytes(path))
        raw[len(raw) - 20] ^= 0x01  # a flipped bit in seq 5, a complete line: it was sent
        write_bytes(path, bytes(raw))
        log2 = reopen(log, root)
        assert seqs(evlog.events(log2)) == [1, 2, 3, 4]
        assert log2.next_seq > 5
        # ... and a file with no good line at all
        write_bytes(path, b"garbage\n")
        assert reopen(log, root).next_seq > 5

    with_log(run)


def test_out_of_order_and_duplicate_lines_are_dropped():
    def run(log, root):
        st = log.store
        for s in (3, 3, 5, 4, 7):
            st.append_event({"seq": s, "epoch_s": None, "ms": s, "kind": "k", "data": {}})
        assert seqs(evlog.events(log)) == [3, 5, 7]
        assert seqs(page(log, 4, 10)[0]) == [5, 7]
        # the boot scan: 5 lines, the highest seq 7, 2 dropped (a repeat, one out of order),
        # the last line not torn
        assert evlog.scan(Store(root)) == (3, 7, 2, False)
        log2 = reopen(log, root)
        assert log2.next_seq == 8
        assert log2.store.event_lines() == 3

    with_log(run)


def test_ram_does_not_grow_with_events():
    def run(log, root):
        fill(log, 10)
        page(log, 0, 50, 800)
        gc.collect()
        m10 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        fill(log, 290)  # 300 lines in the file (bound 400), the last 200 readable
        ev, nxt = page(log, 0, 50, 800)
        assert ev and ev[0]["seq"] == 101 and log.store.event_lines() == 300
        del ev
        gc.collect()
        m300 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        if sys.implementation.name == "micropython":
            assert abs(m300 - m10) < 512, (m10, m300)

    with_log(run)


def test_bad_capacity():
    raises(ValueError, EventLog, Store("/nonexistent-root-for-test"), 0)


# ---------------------------------------------------------------------- the app's `log`


def _app(root):
    from fakeboard import FakeBoard
    from pumpcore.app import App

    b = FakeBoard(root=root + "/")
    return App(b, keys={}), b


def _log_all(app, since=0):
    """Every readable event through the `log` command, page by page, each page one frame."""
    from pumpcore import proto

    out = []
    while True:
        res = app.call("log", {"since": since, "limit": 50}, "clinician", "l", app.board.t_ms)
        assert len(proto.encode_ok("l", res)) <= proto.MAX_LINE
        if not res["events"]:
            return out, res["next"]
        out.extend(res["events"])
        since = res["next"]


def _events(app, b, n):
    for _ in range(n):
        b.t_ms += 1000
        app._event("alarm.raised", {"kind": "LOW", "critical": False}, b.t_ms)


def test_app_log_across_compaction_restart_and_a_lost_file():
    d = tmpdir()
    try:
        app, b = _app(d)  # its boot logs "reset" as seq 1
        _events(app, b, 399)
        evs, nxt = _log_all(app)
        assert seqs(evs) == list(range(201, 401)) and nxt == 401
        _events(app, b, 1)  # 401 lines: compacted to the last 200
        assert app.store.event_lines() == 200
        evs, nxt = _log_all(app, 390)
        assert seqs(evs) == list(range(390, 402)) and nxt == 402
        # a restart continues the seq, no gap; the reset is logged
        app, b = _app(d)
        evs, nxt = _log_all(app, 400)
        assert seqs(evs) == [400, 401, 402] and evs[-1]["kind"] == "reset"
        assert [e["kind"] for e in evlog.events(app.events)][-1] == "reset"
        # losing the file never reuses a seq
        os.remove(d + "/data/events.log")
        app, b = _app(d)
        evs, nxt = _log_all(app)
        assert len(evs) == 1 and evs[0]["kind"] == "reset" and evs[0]["seq"] > 402
    finally:
        rmtree(d)


def test_app_ram_does_not_grow_with_events():
    d = tmpdir()
    try:
        app, b = _app(d)
        _events(app, b, 9)
        take_output(app.server)
        _log_all(app)
        gc.collect()
        m10 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        _events(app, b, 290)
        take_output(app.server)
        _log_all(app)
        gc.collect()
        m300 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        if sys.implementation.name == "micropython":
            assert abs(m300 - m10) < 1024, (m10, m300)
    finally:
        rmtree(d)




def test_the_rarely_used_log_code_is_transient():
    """The boot scan, `log` and compaction run from pumpcore.evlog, imported for the call.
    Under MicroPython a precompiled evlog (.mpy; here the sources stand in for it) is dropped
    after the step or command that loaded it, and `log` answers the same; appending an event
    does not load it. CPython keeps it."""

    mpy = sys.implementation.name == "micropython"
    forget_module("pumpcore.evlog")
    old = loader.DROP_SOURCE
    loader.DROP_SOURCE = True
    d = tmpdir()
    try:
        app, b = _app(d)  # restore() scanned the file with evlog, then the boot shed it
        assert ("pumpcore.evlog" in sys.modules) != mpy
        _events(app, b, 399)  # 400 lines: at the bound, no compaction
        if mpy:
            assert "pumpcore.evlog" not in sys.modules  # appending is resident code
        take_output(app.server)
        gc.collect()
        m0 = gc.mem_alloc() if mpy else 0
        evs, nxt = _log_all(app)
        app._shed()
        assert seqs(evs) == list(range(201, 401)) and nxt == 401
        assert ("pumpcore.evlog" in sys.modules) != mpy
        _events(app, b, 1)  # 401 lines: compacted to the last 200, by evlog
        assert "pumpcore.evlog" in sys.modules
        assert app.store.event_lines() == 200
        b.t_ms += 1000
        app.step(b.t_ms)
        assert ("pumpcore.evlog" in sys.modules) != mpy
        # the paging place kept between calls is plain ints on the EventLog
        evs, nxt = _log_all(app, 390)
        app._shed()
        assert seqs(evs) == list(range(390, 402)) and nxt == 402
        assert ("pumpcore.evlog" in sys.modules) != mpy
        res = app.call("log", {"since": 398, "limit": 2}, "clinician", "l", b.t_ms)
        app._shed()
        assert seqs(res["events"]) == [398, 399] and res["next"] == 400
        res = app.call("log", {"since": res["next"], "limit": 2}, "clinician", "l", b.t_ms)
        app._shed()
        assert seqs(res["events"]) == [400, 401] and res["next"] == 402
        assert app.events.page_seq == 402 and isinstance(app.events.page_off, int)
        assert ("pumpcore.evlog" in sys.modules) != mpy
        del res, evs
        take_output(app.server)
        gc.collect()
        if mpy:
            # nothing kept a reference to the dropped module: its heap came back
            grown = gc.mem_alloc() - m0
            assert grown < 1024, grown
        # the next boot scans the compacted file and continues the seq
        app, b = _app(d)
        evs, nxt = _log_all(app, 400)
        app._shed()
        assert seqs(evs) == [400, 401, 402] and evs[-1]["kind"] == "reset"
        assert ("pumpcore.evlog" in sys.modules) != mpy
    finally:
        loader.DROP_SOURCE = old
        rmtree(d)
