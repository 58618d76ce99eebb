from _util import raises
from pumpcore.events import EventError, EventLog

EPOCH = 1_700_000_000


def filled(n, capacity=200):
    log = EventLog(capacity)
    for i in range(n):
        log.add("k%d" % i, {"i": i}, EPOCH + i, 1000 + i)
    return log


def test_add_builds_events_with_increasing_seq():
    log = EventLog(4)
    e1 = log.add("reset", {"cause": "power"}, EPOCH, 12)
    e2 = log.add("refill", None, None, 13)
    assert e1 == {"seq": 1, "epoch_s": EPOCH, "ms": 12, "kind": "reset", "data": {"cause": "power"}}
    assert e2["seq"] == 2 and e2["data"] == {} and e2["epoch_s"] is None
    raises(EventError, log.add, "x", [1], EPOCH, 0)
    raises(EventError, log.add, 5, {}, EPOCH, 0)
    assert log.next_seq == 3  # refused adds use no seq


def test_ring_drops_the_oldest():
    log = filled(7, capacity=4)
    assert len(log) == 4
    assert [e["seq"] for e in log.events()] == [4, 5, 6, 7]
    assert log.first_seq() == 4
    assert log.last()["seq"] == 7


def test_since_pages_through():
    log = filled(10, capacity=8)  # keeps seq 3..10
    ev, nxt = log.since(0, 3)
    assert [e["seq"] for e in ev] == [3, 4, 5] and nxt == 6
    ev, nxt = log.since(nxt, 3)
    assert [e["seq"] for e in ev] == [6, 7, 8] and nxt == 9
    ev, nxt = log.since(nxt, 3)
    assert [e["seq"] for e in ev] == [9, 10] and nxt == 11
    ev, nxt = log.since(nxt, 3)
    assert ev == [] and nxt == 11
    log.add("new", {}, EPOCH, 0)
    ev, nxt = log.since(nxt, 3)
    assert [e["seq"] for e in ev] == [11] and nxt == 12
    ev, nxt = log.since(7, 0)
    assert ev == [] and nxt == 12
    ev, _ = log.since(7, None)
    assert [e["seq"] for e in ev] == [7, 8, 9, 10, 11]
    raises(EventError, log.since, 0, -1)


def test_since_from_the_future_resyncs():
    log = filled(3)
    ev, nxt = log.since(500, 10)
    assert ev == [] and nxt == 4


def test_seq_survives_restart_and_is_never_reused():
    log = filled(5, capacity=3)
    d = log.to_dict()
    log2 = EventLog.from_dict(d)
    assert log2.events() == log.events()
    assert log2.add("after", {}, EPOCH, 0)["seq"] == 6
    # restored from a log file only (no saved next_seq)
    log3 = EventLog(3).restore(log.events())
    assert log3.next_seq == 6
    # an empty or lost log file must not restart seq below the saved next_seq
    log4 = EventLog(3).restore([], next_seq=6)
    assert log4.add("x", {}, EPOCH, 0)["seq"] == 6
    # duplicated or out-of-order lines are dropped
    evs = log.events()
    log5 = EventLog(10).restore([evs[0], evs[0], evs[2], evs[1], {"bad": 1}])
    assert [e["seq"] for e in log5.events()] == [3, 5]
    # restoring more than capacity keeps the newest
    log6 = EventLog(2).restore(filled(5).events())
    assert [e["seq"] for e in log6.events()] == [4, 5] and log6.next_seq == 6


def test_bad_capacity():
    raises(EventError, EventLog, 0)
