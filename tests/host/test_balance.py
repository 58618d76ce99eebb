"""The MT-SICS client against the virtual balance on a real pseudo-terminal."""

import pytest
from pumprig.balance import Balance, to_micrograms
from pumprig.errors import BalanceError
from pumprig.virtual.balance import VirtualBalance, serve_on_pty


class Scale:
    """A vessel whose true mass and clock the test sets."""

    def __init__(self, mass_ug=0, t_ms=0):
        self.mass_ug = mass_ug
        self.t_ms = t_ms


@pytest.fixture
def served():
    """served(**VirtualBalance kwargs) -> (Balance, Scale, VirtualBalance); all closed after."""
    opened = []

    def make(timeout=2.0, **kw):
        scale = Scale()
        vb = VirtualBalance(**kw)
        path, stop = serve_on_pty(lambda: scale.mass_ug, vb, now_ms=lambda: scale.t_ms)
        bal = Balance(path, timeout=timeout)
        opened.append((bal, stop))
        return bal, scale, vb

    yield make
    for bal, stop in opened:
        bal.close()
        stop()


def test_reply_format():
    vb = VirtualBalance(noise_ug=0, resolution_ug=10)
    assert vb.respond(b"S\r\n", 0, 12_345_674) == b"S S      12.34567 g\r\n"
    assert vb.respond(b"SI", 0, 12_345_676) == b"S S      12.34568 g\r\n"
    assert vb.respond(b"XYZ", 0, 0) == b"ES\r\n"
    assert vb.respond(b"", 0, 0) == b""
    assert VirtualBalance(noise_ug=0).respond(b"S", 0, -1500) == b"S S     -0.001500 g\r\n"


def test_units():
    assert to_micrograms("12.34567", "g") == 12_345_670
    assert to_micrograms("-0.0015", "g") == -1500
    assert to_micrograms("1.5", "mg") == 1500
    assert to_micrograms("0.0000005", "g") == 1  # half a microgram rounds away from zero
    with pytest.raises(BalanceError, match="set it to g"):
        to_micrograms("1", "lb")
    with pytest.raises(BalanceError, match="not a number"):
        to_micrograms("1.2.3", "g")


def test_stable_and_immediate_weight(served):
    bal, scale, _ = served(noise_ug=0, resolution_ug=10)
    scale.mass_ug = 12_345_674
    assert bal.weigh_stable() == 12_345_670
    scale.mass_ug = 7_000_001
    assert bal.weigh_now() == 7_000_000
    assert bal.last_stable is True


def test_unstable_after_a_drop(served):
    bal, scale, _ = served(noise_ug=0, settle_ms=2000)
    scale.mass_ug = 1000
    assert bal.weigh_stable() == 1000
    scale.mass_ug, scale.t_ms = 1500, 100  # a drop lands
    assert bal.weigh_now() == 1500
    assert bal.last_stable is False  # S D
    with pytest.raises(BalanceError, match="no stable weight"):
        bal.weigh_stable()  # S I
    scale.t_ms = 2200
    assert bal.weigh_stable() == 1500


def test_zero_and_tare(served):
    bal, scale, _ = served(noise_ug=0)
    scale.mass_ug = 50_000_000  # the empty vessel
    bal.zero()
    assert bal.weigh_stable() == 0
    scale.mass_ug = 50_000_200
    assert bal.tare() == 200
    assert bal.tare_value() == 200
    assert bal.weigh_stable() == 0
    scale.mass_ug = 50_001_200
    assert bal.weigh_now() == 1000
    bal.zero()  # zero clears the tare
    assert bal.tare_value() == 0


def test_identification_and_reset(served):
    bal, scale, _ = served(seed=7, noise_ug=0)
    ident = bal.identify()
    assert ident == {"model": "PUMPRIG-VB 220.000000 g", "serial": "PRVB000007"}
    scale.mass_ug = 300
    bal.tare()
    assert bal.reset() == "PRVB000007"
    assert bal.tare_value() == 0
    assert bal.weigh_stable() == 300


@pytest.mark.parametrize("kind, match", [
    ("ET", "transmission error"),
    ("EL", "cannot execute"),
    ("ES", "did not understand"),
    ("unstable", "no stable weight"),
    ("overload", "overload"),
    ("underload", "underload"),
])
def test_errors(served, kind, match):
    bal, scale, vb = served(noise_ug=0)
    vb.fail_next(kind)
    with pytest.raises(BalanceError, match=match):
        bal.weigh_stable()
    assert bal.weigh_stable() == 0  # the next command is answered normally


def test_physical_limits_and_commands(served):
    bal, scale, vb = served(noise_ug=0, capacity_ug=1_000_000)
    scale.mass_ug = 1_000_001
    with pytest.raises(BalanceError, match=r"overload \(S \+\)"):
        bal.weigh_now()
    scale.mass_ug = -2_000_000  # pan lifted
    with pytest.raises(BalanceError, match=r"underload \(S -\)"):
        bal.weigh_stable()
    scale.mass_ug = 0
    with pytest.raises(BalanceError, match="syntax error ES"):
        bal.command("XYZ")
    vb.fail_next("unstable")
    with pytest.raises(BalanceError, match="could not zero"):
        bal.zero()
    vb.fail_next("unstable")
    with pytest.raises(BalanceError, match="could not tare"):
        bal.tare()


def test_no_answer_times_out(served):
    bal, scale, vb = served(noise_ug=0, timeout=0.3)
    vb.fail_next("silent")
    with pytest.raises(BalanceError, match="no answer"):
        bal.weigh_stable()
    assert bal.weigh_stable() == 0


def test_closed_port_and_bad_url():
    with pytest.raises(BalanceError, match="cannot open"):
        Balance("/dev/nonexistent-balance", timeout=0.1)


def readings(bal, n):
    return [bal.weigh_now() for _ in range(n)]


def test_noise_reproducible_by_seed(served):
    a, sa, _ = served(seed=3, noise_ug=2)
    b, sb, _ = served(seed=3, noise_ug=2)
    c, sc, _ = served(seed=4, noise_ug=2)
    for s in (sa, sb, sc):
        s.mass_ug = 1_000_000
    ra, rb, rc = readings(a, 200), readings(b, 200), readings(c, 200)
    assert ra == rb
    assert ra != rc
    dev = [x - 1_000_000 for x in ra]
    mean = sum(dev) / len(dev)
    sd = (sum((x - mean) ** 2 for x in dev) / (len(dev) - 1)) ** 0.5
    assert abs(mean) < 0.6  # 2 ug / sqrt(200) = 0.14 ug standard error
    assert 1.5 < sd < 2.5
    assert max(abs(x) for x in dev) <= 7  # sum of four uniforms: at most 2 * sqrt(3) * 2


def test_drift_and_evaporation(served):
    bal, scale, _ = served(noise_ug=0, drift_ug_per_h=100, evaporation_ug_per_h=400, start_ms=0)
    scale.mass_ug = 5000
    assert bal.weigh_stable() == 5000
    scale.t_ms = 3_600_000  # one hour later: +100 drift -400 evaporated
    assert bal.weigh_stable() == 4700
    scale.t_ms = 7_200_000
    assert bal.weigh_now() == 4400
