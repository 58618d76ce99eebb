from _util import raises
from pumpcore import alarmlist, settings
from pumpcore import alarms as A
from pumpcore.alarms import CRITICAL_KINDS, Alarms, TonePlayer


def _player(**kw):
    return TonePlayer(settings.tones(**kw))


def _alarms(player=None):
    return Alarms(player or _player())


def _critical(a):
    return any(k in CRITICAL_KINDS for k in a.active())


def _next_tone(a, now_ms):
    f, _led, nxt = a.output(now_ms)
    return f, nxt


def _testing(p, now_ms):
    t = p._test_t0
    return t is not None and 0 <= now_ms - t < p.test_ms

HI = 880
LO = 660
EPOCH = 1_700_000_000


def trace(src, t0, t_end):
    """Follow next_ms from t0 to t_end: [(t, freq_hz, led)] at every change point."""
    out = []
    t = t0
    while t is not None and t < t_end:
        f, led, nxt = src.output(t)
        out.append((t, f, led))
        assert nxt is None or nxt > t
        t = nxt
    return out


def tones(src, t0, t_end):
    """Follow next_ms from t0 to t_end keeping only the buzzer changes: [(t, freq_hz)]."""
    out = []
    t = t0
    while t is not None and t < t_end:
        f, _led, nxt = src.output(t)
        if not out or out[-1][1] != f:
            out.append((t, f))
        assert nxt is None or nxt > t
        t = nxt
    return out


def test_kinds_and_severity():
    for k in ("EMPTY", "EOS", "STALL", "OCCLUSION", "MEMORY", "BATTERY_FAULT", "CAP_REACHED",
              "FAULT"):
        assert A.is_critical(k)
    for k in ("LOW", "REFILL_BY", "ERI", "RESET", "CLOCK", "MAINTENANCE"):
        assert not A.is_critical(k)
    assert len(A.KINDS) == 14
    raises(ValueError, A.is_critical, "FIRE")
    raises(ValueError, _alarms().raise_, "FIRE", EPOCH)


def test_latch_needs_ack_and_clear_in_either_order():
    a = _alarms()
    assert a.raise_("LOW", EPOCH)
    assert a.condition_cleared("LOW", EPOCH + 5)
    assert a.active() == ["LOW"]  # latched: still listed
    assert alarmlist.to_list(a) == [
        {"kind": "LOW", "critical": False, "active": False, "acked": False, "since_epoch_s": EPOCH}
    ]
    assert alarmlist.ack(a, "LOW") == ["LOW"]
    assert a.active() == []
    # other order: ack first, condition still present -> listed, silenced
    a.raise_("EMPTY", EPOCH)
    assert alarmlist.ack(a) == ["EMPTY"]
    assert a.active() == ["EMPTY"]
    assert alarmlist.to_list(a)[0]["acked"] is True
    assert a.level() == A.NONE
    assert _critical(a)
    assert a.condition_cleared("EMPTY", EPOCH + 9)
    assert a.active() == []
    assert not _critical(a)


def test_reraise_of_an_active_alarm_does_nothing():
    a = _alarms()
    a.raise_("STALL", EPOCH)
    alarmlist.ack(a, "STALL")
    assert a.raise_("STALL", EPOCH + 100) is False
    e = alarmlist.to_list(a)[0]
    assert e["acked"] is True and e["since_epoch_s"] == EPOCH  # not re-armed
    # a latched (cleared but unacked) alarm whose condition returns becomes active again
    a.raise_("LOW", EPOCH)
    a.condition_cleared("LOW", EPOCH + 1)
    assert a.raise_("LOW", EPOCH + 2) is True
    assert a.condition_active("LOW")
    # after it is gone, raising it again is a new alarm with a new start
    alarmlist.ack(a, "LOW")
    a.condition_cleared("LOW", EPOCH + 3)
    assert "LOW" not in a
    assert a.raise_("LOW", EPOCH + 4)
    assert [x["since_epoch_s"] for x in alarmlist.to_list(a) if x["kind"] == "LOW"] == [EPOCH + 4]


def test_ack_reports_only_what_it_acknowledged():
    a = _alarms()
    a.raise_("LOW", EPOCH)
    a.raise_("ERI", EPOCH + 1)
    assert alarmlist.ack(a, "EMPTY") == []  # not listed
    assert alarmlist.ack(a, "LOW") == ["LOW"]
    assert alarmlist.ack(a, "LOW") == []
    assert alarmlist.ack(a) == ["ERI"]
    assert alarmlist.ack(a) == []
    raises(ValueError, alarmlist.ack, a, "NOPE")
    assert a.condition_cleared("CLOCK", EPOCH) is False  # never raised


def test_order_critical_first_then_oldest():
    a = _alarms()
    a.raise_("LOW", EPOCH)
    a.raise_("RESET", EPOCH - 10)
    a.raise_("STALL", EPOCH + 50)
    a.raise_("EMPTY", EPOCH + 20)
    assert a.active() == ["EMPTY", "STALL", "RESET", "LOW"]
    assert [x["kind"] for x in alarmlist.to_list(a)] == a.active()
    assert [k for k in a.active() if not a.items[k][2]] == a.active()


def test_round_trip_keeps_latches():
    a = _alarms()
    a.raise_("MEMORY", EPOCH)
    a.raise_("LOW", EPOCH + 1)
    a.condition_cleared("LOW", EPOCH + 2)
    alarmlist.ack(a, "MEMORY")
    d = a.to_dict()
    d["alarms"].append(["FUTURE_KIND", EPOCH, True, False, None])  # a newer firmware's
    b = _alarms()
    b.load(alarmlist.restore(d))
    assert alarmlist.to_list(b) == alarmlist.to_list(a)
    assert b.level() == A.NONCRITICAL


def test_critical_two_tone_pattern_repeats_every_10_minutes():
    a = _alarms()
    t0 = 5_000
    a.raise_("OCCLUSION", EPOCH)
    burst = [(t0 + i * 250, HI if i % 2 == 0 else LO) for i in range(8)]
    expect = burst + [(t0 + 2000, 0)]
    expect += [(t + 600_000, f) for t, f in burst] + [(t0 + 602_000, 0)]
    expect += [(t + 1_200_000, f) for t, f in burst[:1]]
    assert tones(a, t0, t0 + 1_200_001) == expect
    # LED: steady on between bursts (no wake-ups for 10 minutes), blinking 1 Hz during a burst
    tr = trace(a, t0 + 599_000, t0 + 601_000)
    assert [(t - t0, on) for t, f, on in tr if f == 0] == [(599_000, True)]
    burst_led = [(t - t0 - 600_000, on) for t, _f, on in tr if t >= t0 + 600_000]
    assert (0, True) in burst_led and (500, False) in burst_led
    base = t0 + 599_000
    assert [(t - base, f) for t, f, _on in tr] == [
        (0, 0),
        (1000, HI),
        (1250, LO),
        (1500, HI),
        (1750, LO),
    ]
    f, on, nxt = a.output(t0 + 300_250)
    assert (f, on, nxt) == (0, True, t0 + 600_000)  # the app sleeps until the next burst


def test_noncritical_single_tone_repeats_hourly_and_led_is_steady():
    a = _alarms()
    a.raise_("REFILL_BY", EPOCH)
    tr = trace(a, 0, 3_600_001)
    assert tones(a, 0, 3_600_001) == [
        (0, HI),
        (500, 0),
        (1000, HI),
        (1500, 0),
        (2000, HI),
        (2500, 0),
        (3_600_000, HI),
    ]
    assert all(on for _t, _f, on in tr)
    # between bursts nothing changes: the app may sleep 59 minutes
    assert a.output(2500) == (0, True, 3_600_000)
    assert _next_tone(a, 2500) == (0, 3_600_000)


def test_silence_when_all_acked_and_pattern_restarts_on_new_alarm():
    a = _alarms()
    assert a.output(0) == (0, False, None)
    a.raise_("LOW", EPOCH)
    assert a.output(100) == (HI, True, 600)
    alarmlist.ack(a)
    assert a.output(200) == (0, False, None)
    # a new non-critical alarm starts its pattern at once
    a.raise_("ERI", EPOCH)
    assert a.output(10_000) == (HI, True, 10_500)
    # a critical one on top switches to the two-tone pattern at once
    a.raise_("EOS", EPOCH)
    assert a.output(10_100) == (HI, True, 10_350)
    assert a.output(10_350) == (LO, True, 10_600)
    # acking the critical one falls back to the non-critical pattern, restarted
    alarmlist.ack(a, "EOS")
    assert a.output(20_000) == (HI, True, 20_500)
    alarmlist.ack(a)
    assert a.output(20_001) == (0, False, None)


def test_alarm_test_plays_both_patterns_once_then_resumes():
    p = _player(hi_hz=1000, lo_hz=500, test_gap_ms=1000)
    p.alarm_test(100)
    tr = []
    t = 100
    while t is not None:
        f, led, nxt = p.output(t)
        tr.append((t, f, led))
        t = nxt
    crit = [(100 + i * 250, 1000 if i % 2 == 0 else 500, True) for i in range(8)]
    gap = [(2100, 0, True)]
    single = [
        (3100, 1000, True),
        (3600, 0, True),
        (4100, 1000, True),
        (4600, 0, True),
        (5100, 1000, True),
    ]
    assert tr == crit + gap + single + [(5600, 0, False)]
    assert not _testing(p, 5600)


def test_alarm_test_over_a_pending_alarm_then_normal_schedule():
    a = _alarms(_player(test_gap_ms=0))
    a.raise_("LOW", EPOCH)
    assert a.output(0)[0] == HI
    a.alarm_test(10_000)
    assert a.output(10_000) == (HI, True, 10_250)
    assert a.output(12_000) == (HI, True, 12_500)  # single-tone part of the test
    assert a.output(13_500) == (0, True, 14_000)
    f, led, nxt = a.output(14_500)  # test over: back to the hourly schedule
    assert (f, led, nxt) == (0, True, 3_600_000)


def test_intervals_come_from_arguments():
    p = _player(critical_pairs=2, critical_tone_ms=100, critical_repeat_ms=1000, blink_ms=1000)
    p.set_level(A.CRITICAL, 0)
    seq = []
    t = 0
    while t < 2000:
        f, _led, t2 = p.output(t)
        seq.append((t, f))
        t = t2
    assert seq == [
        (0, 880),
        (100, 660),
        (200, 880),
        (300, 660),
        (400, 0),
        (1000, 880),
        (1100, 660),
        (1200, 880),
        (1300, 660),
        (1400, 0),
    ]
    raises(ValueError, _player, critical_repeat_ms=1999)  # shorter than 4 x 500 ms
    raises(ValueError, _player, single_on_ms=0)
