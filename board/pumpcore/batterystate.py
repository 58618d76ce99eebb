"""The battery monitor's state (pumpcore.battery): a sample that moves a threshold count or a
flag (a healthy cell's sample is BatteryMonitor.sample's), the ERI
countdown and the restore at power-on.
Per call (pumpcore.loader; the rule: docs/architecture.md, "Memory"). Functions taking the monitor.
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
    """Feed one raw ADC reading of the cell. Returns the flag changes (possibly [])."""
    if not isinstance(mv, int):
        raise ValueError("mv must be an integer")
    changes = []
    b.last_mv = mv
    b.last_ms = now_ms
    if mv < b.brownout_mv and not b.fault:
        b.fault = True
        b.fault_epoch_s = epoch_s
        b.fault_mv = mv
        changes.append(("fault", True))

    sh = b.shift
    if b.acc is None:
        b.acc = mv << sh
    else:
        b.acc += mv - (b.acc >> sh)
    avg = b.avg_mv

    n = b.debounce
    b.n_below_eri = _count(b.n_below_eri, avg < b.eri_mv, n)
    b.n_below_eos = _count(b.n_below_eos, avg < b.eos_mv, n)
    b.n_above_eri = _count(b.n_above_eri, avg > b.eri_mv + b.hyst_mv, n)
    b.n_above_eos = _count(b.n_above_eos, avg > b.eos_mv + b.hyst_mv, n)

    # worse: ERI before EOS; better: EOS off before ERI off
    if not b.eri and b.n_below_eri >= n:
        b.eri = True
        b.eri_epoch_s = epoch_s
        changes.append(("eri", True))
    if not b.eos and b.n_below_eos >= n:
        b.eos = True
        changes.append(("eos", True))
    if b.eos and b.n_above_eos >= n:
        b.eos = False
        changes.append(("eos", False))
    if b.eri and not b.eos and b.n_above_eri >= n:
        b.eri = False
        b.eri_epoch_s = None
        changes.append(("eri", False))
    if b.eri and b.eri_epoch_s is None and epoch_s is not None:
        b.eri_epoch_s = epoch_s  # ERI began while the wall clock was unknown
    return changes


def restore(b, d):
    """The state BatteryMonitor.load takes, of what to_dict() saved (for the monitor `b`'s
    smoothing shift)."""
    avg = d.get("avg_mv")
    eos = bool(d.get("eos", False))
    return (None if avg is None else avg << b.shift, eos or bool(d.get("eri", False)), eos,
            bool(d.get("fault", False)), d.get("eri_epoch_s"), d.get("fault_epoch_s"),
            d.get("fault_mv"))


def _count(c, cond, cap):
    if not cond:
        return 0
    return c + 1 if c < cap else cap
