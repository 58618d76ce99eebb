from _util import raises
from pumpcore import reservoirfill as rf
from pumpcore.reservoir import Reservoir

DAY_S = 86400
EPOCH = 1_700_000_000


def full20():
    r = Reservoir(20_000_000)
    r.refill(20_000_000, EPOCH)
    return r


def test_p1_worked_example_low_after_exactly_90_days():
    # baclofen 400 mcg/day at 2000 mcg/mL = 200_000 nL/day; 20 mL fill; LOW at 2.0 mL
    r = full20()
    assert rf.seconds_to(r, 2_000_000, 200_000) == 90 * DAY_S
    assert rf.days_to(r, 2_000_000, 200_000) == 90
    assert rf.projected_refill_epoch_s(r, EPOCH, 200_000) == EPOCH + 90 * DAY_S
    for _day in range(89):
        r.on_delivered(200_000)
    assert r.volume_nl == 2_200_000
    assert r.level() == "ok"
    r.on_delivered(200_000)  # day 90
    assert r.volume_nl == 2_000_000
    assert r.level() == "low"


def test_levels_at_the_thresholds():
    r = Reservoir(20_000_000, low_nl=2_000_000, empty_nl=1_000_000, volume_nl=2_000_001)
    assert r.level() == "ok"
    r.on_delivered(1)
    assert r.level() == "low"
    r.on_delivered(999_999)
    assert r.volume_nl == 1_000_001
    assert r.level() == "low"
    r.on_delivered(1)
    assert r.level() == "empty"


def test_delivery_clamps_at_zero_and_rejects_negative():
    r = Reservoir(1_000_000, low_nl=100, empty_nl=10, volume_nl=500)
    assert r.on_delivered(600) == 0
    assert r.volume_nl == 0
    assert r.level() == "empty"
    raises(ValueError, r.on_delivered, -1)


def test_refill_limits_and_returns_the_computed_remainder():
    r = full20()
    r.on_delivered(5_000_000)
    raises(ValueError, r.refill, 20_000_001, EPOCH)
    raises(ValueError, r.refill, -5, EPOCH)
    assert r.volume_nl == 15_000_000  # a refused refill changes nothing
    assert r.refill(20_000_000, EPOCH + 10) == 15_000_000
    assert r.volume_nl == 20_000_000
    assert r.refilled_epoch_s == EPOCH + 10


def test_bad_thresholds():
    raises(ValueError, Reservoir, 0)
    raises(ValueError, Reservoir, 20_000_000, 1_000_000, 2_000_000)  # empty above low
    raises(ValueError, Reservoir, 1_000_000, 2_000_000, 500_000)  # low above capacity
    raises(ValueError, Reservoir, 20_000_000, volume_nl=20_000_001)


def test_seconds_to_rounds_up_and_handles_zero_rate():
    r = Reservoir(20_000_000, volume_nl=3)
    # 3 nL above 0 at 2 nL/day: 1.5 days -> 129600 s exactly; 3 nL at 7 nL/day is not whole
    assert rf.seconds_to(r, 0, 2) == 129_600
    assert rf.seconds_to(r, 0, 7) == (3 * DAY_S + 6) // 7
    assert rf.days_to(r, 0, 2) == 2
    assert rf.seconds_to(r, 0, 0) is None
    assert rf.days_to(r, 0, 0) is None
    assert rf.seconds_to(r, 3, 0) == 0  # already there
    assert rf.seconds_to(r, 5, 1) == 0
    assert rf.projected_refill_epoch_s(r, EPOCH, 0) == EPOCH  # already below LOW


def test_projection_counts_patient_boluses():
    r = full20()
    # basal 200_000 nL/day plus boluses worth 100_000 nL/day: LOW after 60 days
    assert rf.projected_refill_epoch_s(r, EPOCH, 200_000, 100_000) == EPOCH + 60 * DAY_S
    # one vendor projects to 3.0 mL
    assert rf.projected_refill_epoch_s(r, EPOCH, 200_000, 0, target_nl=3_000_000) == EPOCH + 85 * DAY_S
    r2 = full20()
    assert rf.projected_refill_epoch_s(r2, EPOCH, 0, 0) is None


def test_refill_by_date():
    r = Reservoir(20_000_000)
    assert not r.refill_due(EPOCH)
    r.refill(20_000_000, EPOCH, refill_by_epoch_s=EPOCH + 40 * DAY_S)
    assert not r.refill_due(EPOCH + 40 * DAY_S - 1)
    assert r.refill_due(EPOCH + 40 * DAY_S)
    raises(ValueError, r.refill, 20_000_000, EPOCH, EPOCH)  # not in the future
    r.refill(20_000_000, EPOCH + 41 * DAY_S)  # a refill without a date clears it
    assert r.refill_by_epoch_s is None
    assert not r.refill_due(EPOCH + 100 * DAY_S)


def test_round_trip():
    r = Reservoir(40_000_000, low_nl=3_000_000, empty_nl=500_000)
    r.refill(30_000_000, EPOCH, EPOCH + 84 * DAY_S)
    r.on_delivered(123_457)
    r2 = rf.from_dict(Reservoir, rf.to_dict(r))
    assert rf.to_dict(r2) == rf.to_dict(r)
    assert r2.volume_nl == 29_876_543
    assert r2.level() == "ok"
    raises(ValueError, rf.from_dict, Reservoir, {"capacity_nl": 1})
