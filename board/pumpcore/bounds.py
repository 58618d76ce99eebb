"""The range of every integer argument of the protocol (transient: imported by
proto.check_args for a request that has arguments, dropped after it). The commands check their
own, tighter rules after this; this bound keeps nonsense (negative counts, times centuries
away, 18-digit numbers) out of every command.
"""

from pumpcore.proto import BAD_ARGS, CommandError

# Inclusive ranges. An optional argument may also be null (absent).
_EPOCH = (946_684_800, 4_102_444_800)  # 2000-01-01 .. 2100-01-01 UTC
INT_RANGES = {
    "volume_nl": (1, 1_000_000_000), "conc_ng_ml": (1, 1_000_000_000),
    "refill_by_epoch_s": _EPOCH, "step_pl": (1, 1_000_000_000),
    "since": (0, 999_999_999), "limit": (1, 50),
    "epoch_s": _EPOCH, "offset_s": (-86_400, 86_400),
    "next_change_epoch_s": _EPOCH, "next_offset_s": (-86_400, 86_400),
    "steps": (1, 10_000_000), "rate_nl_day": (1, 10_000_000_000_000),
}


def check(entry, args):
    """Raise CommandError(BAD_ARGS) unless every integer argument of args is in its range
    (entry: the command's proto.COMMANDS entry)."""
    for k in args:
        r = INT_RANGES.get(k)
        if r is None:
            continue
        v = args[k]
        if v is None and k in entry[2]:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or not r[0] <= v <= r[1]:
            raise CommandError(BAD_ARGS, "%s must be an integer %d..%d" % (k, r[0], r[1]))
