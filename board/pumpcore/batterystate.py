"""The battery monitor's state (pumpcore.battery): a sample that moves a threshold count or a
flag (a healthy cell's sample is BatteryMonitor.sample's), the ERI
countdown and the restore at power-on.
Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Functions reading the
monitor and returning values: the state BatteryMonitor.load assigns, the days left.
"""


_DAY_S = 86400


def eri_days_left(b, epoch_s):
    """Whole days left of the ERI countdown (rounded up, clamped to 0..eri_days);
    None when not in ERI or the ERI start is unknown (wall clock not set)."""
    if not b.eri or b.eri_epoch_s is None or epoch_s is None:
        return None
    left_s = b.eri_days * _DAY_S - (epoch_s - b.eri_epoch_s)
    if left_s <= 0:
        return 0
    days = -(-left_s // _DAY_S)
    return days if days < b.eri_days else b.eri_days


def sample(b, mv, now_ms, epoch_s):
    """One raw ADC reading of the cell for the monitor b: (the monitor's state after it, for
    BatteryMonitor.load; the flag changes, possibly [])."""
    if not isinstance(mv, int):
        raise ValueError("mv must be an integer")
    changes = []
    eri, eos, fault = b.eri, b.eos, b.fault
    eri_epoch_s, fault_epoch_s, fault_mv = b.eri_epoch_s, b.fault_epoch_s, b.fault_mv
    if mv < b.brownout_mv and not fault:
        fault = True
        fault_epoch_s = epoch_s
        fault_mv = mv
        changes.append(("fault", True))

    sh = b.shift
    acc = b.acc
    acc = mv << sh if acc is None else acc + mv - (acc >> sh)
    avg = acc >> sh

    n = b.debounce
    below_eri = _count(b.n_below_eri, avg < b.eri_mv, n)
    below_eos = _count(b.n_below_eos, avg < b.eos_mv, n)
    above_eri = _count(b.n_above_eri, avg > b.eri_mv + b.hyst_mv, n)
    above_eos = _count(b.n_above_eos, avg > b.eos_mv + b.hyst_mv, n)

    # worse: ERI before EOS; better: EOS off before ERI off
    if not eri and below_eri >= n:
        eri = True
        eri_epoch_s = epoch_s
        changes.append(("eri", True))
    if not eos and below_eos >= n:
        eos = True
        changes.append(("eos", True))
    if eos and above_eos >= n:
        eos = False
        changes.append(("eos", False))
    if eri and not eos and above_eri >= n:
        eri = False
        eri_epoch_s = None
        changes.append(("eri", False))
    if eri and eri_epoch_s is None and epoch_s is not None:
        eri_epoch_s = epoch_s  # ERI began while the wall clock was unknown
    return (acc, eri, eos, fault, eri_epoch_s, fault_epoch_s, fault_mv, below_eri, below_eos,
            above_eri, above_eos, mv, now_ms), changes


def restore(b, d):
    """The state BatteryMonitor.load takes, of what to_dict() saved (for the monitor `b`'s
    smoothing shift; its last sample stays, the debounce counts start from zero)."""
    avg = d.get("avg_mv")
    eos = bool(d.get("eos", False))
    return (None if avg is None else avg << b.shift, eos or bool(d.get("eri", False)), eos,
            bool(d.get("fault", False)), d.get("eri_epoch_s"), d.get("fault_epoch_s"),
            d.get("fault_mv"), 0, 0, 0, 0, b.last_mv, b.last_ms)


def _count(c, cond, cap):
    if not cond:
        return 0
    return c + 1 if c < cap else cap
