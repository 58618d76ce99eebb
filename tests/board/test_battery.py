from _util import raises
from pumpcore import batterystate
from pumpcore.battery import BatteryMonitor

DAY_S = 86400
EPOCH = 1_700_000_000


def mon(**kw):
    cfg = {"eri_mv": 3300, "eos_mv": 3000, "brownout_mv": 2800, "hyst_mv": 50, "debounce": 8}
    cfg.update(kw)
    return BatteryMonitor(**cfg)


def feed(b, mv, n, t0=0, epoch=EPOCH):
    """n samples of mv; returns all transitions and the index (0-based) of each."""
    out = []
    for i in range(n):
        for tr in b.sample(mv, t0 + i * 600_000, epoch + i * 600):
            out.append((i, tr))
    return out


def test_first_sample_initialises_the_average():
    b = mon()
    assert b.avg_mv is None
    assert b.sample(3600, 0, EPOCH) == []
    assert b.avg_mv == 3600
    assert b.state == "ok"


def test_average_converges_exactly_both_ways():
    b = mon()
    b.sample(3600, 0, EPOCH)
    b.sample(3500, 1, EPOCH)
    assert b.avg_mv == 3575  # avg += (mv - avg) / 4
    for _ in range(60):
        b.sample(3500, 2, EPOCH)
    assert b.avg_mv == 3500
    for _ in range(60):
        b.sample(3503, 3, EPOCH)
    assert b.avg_mv == 3503  # no floor bias left behind


def test_eri_needs_debounce_consecutive_samples():
    b = mon(debounce=8)
    b.sample(3290, 0, EPOCH)  # initialises below ERI: that is 1 qualifying sample
    assert feed(b, 3290, 6) == []
    assert b.state == "ok"
    assert b.sample(3290, 0, EPOCH + 3600) == [("eri", True)]
    assert b.state == "eri"
    assert b.eri_epoch_s == EPOCH + 3600


def test_an_interrupted_run_restarts_the_debounce():
    b = mon(debounce=4)
    b.sample(3200, 0, EPOCH)
    b.sample(3200, 0, EPOCH)
    b.sample(3200, 0, EPOCH)
    # one sample that brings the average back above 3300 breaks the run
    b.sample(3700, 0, EPOCH)
    assert b.avg_mv > 3300
    assert b.state == "ok"
    tr = feed(b, 3200, 20)
    assert tr[0][1] == ("eri", True)
    # the average first goes below 3300 at some sample k; ERI needs 3 more after it
    b2 = mon(debounce=4)
    for mv in (3200, 3200, 3200, 3700):
        b2.sample(mv, 0, EPOCH)
    k = None
    for i in range(20):
        b2.sample(3200, 0, EPOCH)
        if k is None and b2.avg_mv < 3300:
            k = i
        if b2.state == "eri":
            assert i == k + 3
            break
    assert b2.state == "eri"


def test_hysteresis_on_the_way_back():
    b = mon(debounce=1, hyst_mv=50)
    b.sample(3299, 0, EPOCH)
    assert b.state == "eri"
    # above the threshold but within the hysteresis band: stays in ERI
    assert feed(b, 3350, 60) == []
    assert b.avg_mv == 3350
    assert b.state == "eri"
    # the transition comes at exactly the sample whose average leaves the band
    for _ in range(60):
        tr = b.sample(3400, 0, EPOCH)
        if b.avg_mv > 3350:
            assert tr == [("eri", False)]
            break
        assert tr == []
    assert b.state == "ok"
    assert b.eri_epoch_s is None
    # and going down again needs the average below 3300, not just below 3350
    assert feed(b, 3300, 60) == []
    assert b.state == "ok"


def test_recovery_also_needs_debounce():
    b = mon(debounce=3, hyst_mv=50, shift=0)  # shift=0: no smoothing, raw samples
    tr = feed(b, 2999, 3)
    assert tr == [(2, ("eri", True)), (2, ("eos", True))]  # worse: ERI first, then EOS
    assert b.state == "eos"
    # a fresh battery: both clear after 3 samples, EOS first
    tr = feed(b, 3600, 3)
    assert tr == [(2, ("eos", False)), (2, ("eri", False))]
    assert b.state == "ok"
    # back from EOS only as far as ERI while below eri + hyst
    feed(b, 2999, 3)
    tr = feed(b, 3350, 10)
    assert tr == [(2, ("eos", False))]
    assert b.state == "eri"
    # inside the EOS hysteresis band (3000..3050): no way back
    b2 = mon(debounce=1, shift=0)
    b2.sample(2999, 0, EPOCH)
    assert feed(b2, 3050, 10) == []
    assert b2.state == "eos"
    assert feed(b2, 3051, 1) == [(0, ("eos", False))]


def test_a_single_bad_sample_in_a_run_restarts_it():
    b = mon(debounce=4, shift=0)
    for mv in (3299, 3299, 3299, 3300, 3299, 3299, 3299):
        assert b.sample(mv, 0, EPOCH) == []
    assert b.sample(3299, 0, EPOCH) == [("eri", True)]
    # on the way back a sample inside the band interrupts the run
    for mv in (3351, 3351, 3351, 3350, 3351, 3351, 3351):
        assert b.sample(mv, 0, EPOCH) == []
    assert b.sample(3351, 0, EPOCH) == [("eri", False)]


def test_sequence_ok_eri_eos_with_averaging():
    b = mon(debounce=8)
    seen = []
    mv = 3600
    i = 0
    while mv > 2900:
        for tr in b.sample(mv, i, EPOCH + i * 600):
            seen.append(tr)
        mv -= 2
        i += 1
    assert seen == [("eri", True), ("eos", True)]
    assert b.state == "eos"
    assert not b.fault  # never below the brown-out level


def test_brownout_latches_until_cleared():
    b = mon()
    b.sample(3600, 0, EPOCH)
    assert b.sample(2799, 1, EPOCH + 1) == [("fault", True)]
    assert b.fault
    assert b.fault_epoch_s == EPOCH + 1
    assert b.state == "ok"  # one dip does not move the smoothed state
    assert feed(b, 3600, 5) == []
    assert b.sample(2500, 2, EPOCH + 2) == []  # already latched: reported once
    assert b.fault
    assert b.clear_fault() is True
    assert not b.fault
    assert b.clear_fault() is False
    assert b.sample(2800, 3, EPOCH + 3) == []  # at the threshold is not below it
    assert b.sample(2799, 4, EPOCH + 4) == [("fault", True)]


def test_eri_countdown():
    b = mon(debounce=1)
    assert b.eri_days_left(EPOCH) is None
    b.sample(3200, 0, EPOCH)
    assert b.eri_days_left(EPOCH) == 90
    assert b.eri_days_left(EPOCH + 1) == 90
    assert b.eri_days_left(EPOCH + DAY_S) == 89
    assert b.eri_days_left(EPOCH + 89 * DAY_S + 1) == 1
    assert b.eri_days_left(EPOCH + 90 * DAY_S) == 0
    assert b.eri_days_left(EPOCH + 400 * DAY_S) == 0
    assert b.eri_epoch_s == EPOCH  # the countdown runs from the first ERI sample


def test_eri_start_waits_for_a_wall_clock():
    b = mon(debounce=1)
    b.sample(3200, 0, None)
    assert b.state == "eri"
    assert b.eri_days_left(EPOCH) is None
    b.sample(3200, 1, EPOCH)
    assert b.eri_epoch_s == EPOCH


def test_bad_config():
    raises(ValueError, BatteryMonitor, 3000, 3300)  # eos above eri
    raises(ValueError, mon, debounce=0)
    raises(ValueError, mon, hyst_mv=-1)
    raises(ValueError, mon().sample, 3.3, 0, EPOCH)


def test_round_trip():
    b = mon(debounce=1)
    b.sample(3200, 0, EPOCH)
    b.sample(2000, 1, EPOCH + 5)
    d = b.to_dict()
    b2 = BatteryMonitor(eri_mv=3300, eos_mv=3000, brownout_mv=2800, hyst_mv=50, debounce=1)
    b2.load(batterystate.restore(b2, d))
    assert b2.to_dict() == d
    assert b2.state == b.state
    assert b2.fault and b2.eri_epoch_s == EPOCH
    # the restored average continues smoothly instead of re-initialising
    b.sample(3000, 2, EPOCH + 6)
    b2.sample(3000, 2, EPOCH + 6)
    assert b2.avg_mv == b.avg_mv


def test_the_healthy_fast_path_is_batterystate_sample():
    """BatteryMonitor.sample takes a healthy cell's reading itself (loading
    pumpcore.batterystate at every hourly sample cost an import, a drop and a collection per
    hour on a flashed board: docs/benchmarks.md, simulation side by side): the flags, the
    average, the counts and the answer must be batterystate.sample's, reading after reading,
    through healthy spells, sags into ERI and EOS, brown-out dips and recoveries."""
    import random

    from pumpcore import batterystate
    from pumpcore.battery import BatteryMonitor

    def rnd(a, b):
        return a + random.getrandbits(16) % (b - a + 1)

    fields = ("acc", "eri", "eos", "fault", "eri_epoch_s", "fault_epoch_s", "fault_mv",
              "last_mv", "last_ms", "n_below_eri", "n_below_eos", "n_above_eri",
              "n_above_eos")
    fast_taken = 0
    for debounce in (1, 3, 8):
        a = BatteryMonitor(debounce=debounce)
        b = BatteryMonitor(debounce=debounce)
        level = 3700
        for i in range(3000):
            if i % 97 == 0:
                level = (3700, 3350, 3250, 2950, 3600)[rnd(0, 4)]
            mv = level + rnd(-80, 80) if i % 211 else 2700  # a brown-out dip now and then
            before = a.n_above_eri, a.acc
            ca = a.sample(mv, i * 1000, 1_800_000_000 + i)
            st, cb = batterystate.sample(b, mv, i * 1000, 1_800_000_000 + i)
            b.load(st)
            assert ca == cb, (debounce, i, mv, ca, cb)
            for f in fields:
                assert getattr(a, f) == getattr(b, f), (debounce, i, f)
            assert a.settling() == b.settling() and a.state == b.state
            if a.fault and i % 211 == 5:
                a.clear_fault()
                b.clear_fault()
            if before[1] is not None and not ca and not a.eri and not a.fault:
                fast_taken += 1
    assert fast_taken > 1000
