"""The drug reservoir: a volume computed from delivery, never measured.

A real implant has no level sensor: the volume is what was filled minus what the motor was
commanded to deliver, and errors only show up at the next refill (the aspirated remainder).
All volumes are integer nL, rates integer nL/day, times integer seconds.
"""



OK = "ok"
LOW = "low"
EMPTY = "empty"



class Reservoir:
    """Reservoir(capacity_nl, low_nl=2_000_000, empty_nl=1_000_000, volume_nl=0)

    level() is "low" at volume <= low_nl and "empty" at volume <= empty_nl. The settings are
    checked by pumpcore.settings; a refill's checks, the projections (reservoirfill.seconds_to,
    days_to, projected_refill_epoch_s) and the record form (to_dict, from_dict) are in
    pumpcore.reservoirfill: per call, functions of plain data or of a Reservoir they read.
    """

    def __init__(self, *args, **kw):
        """The settings checked by pumpcore.settings.reservoir (ValueError if one is out of
        range)."""
        from pumpcore import settings

        self.capacity_nl, self.low_nl, self.empty_nl, self.volume_nl = settings.reservoir(
            *args, **kw)
        self.refilled_epoch_s = self.refill_by_epoch_s = None

    def set_thresholds(self, low_nl, empty_nl):
        """Programmable LOW and EMPTY volumes: 0 <= empty_nl <= low_nl <= capacity_nl. Here,
        not in reservoirfill: plan.set, the command that needs the most heap, calls it."""
        for v in (low_nl, empty_nl):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError("low_nl and empty_nl must be integers >= 0")
        if empty_nl > low_nl or low_nl > self.capacity_nl:
            raise ValueError("need 0 <= empty_nl <= low_nl <= capacity_nl")
        self.low_nl = low_nl
        self.empty_nl = empty_nl

    # --- accounting -------------------------------------------------------------------------

    def on_delivered(self, nl):
        """Subtract a delivered volume (clamped at 0). Returns the new volume."""
        if not isinstance(nl, int) or isinstance(nl, bool) or nl < 0:
            raise ValueError("nl must be an integer >= 0")
        v = self.volume_nl - nl
        self.volume_nl = v if v > 0 else 0
        return self.volume_nl

    def refill(self, volume_nl, epoch_s, refill_by_epoch_s=None):
        """The reservoir now holds volume_nl (the old remainder was aspirated).

        refill_by_epoch_s (drug stability date) replaces any earlier one; None clears it.
        Returns the computed volume before the refill (compare with what was aspirated).
        """
        from pumpcore import reservoirfill

        reservoirfill.check_refill(self.capacity_nl, volume_nl, epoch_s, refill_by_epoch_s)
        old = self.volume_nl
        self.set_fill(volume_nl, epoch_s, refill_by_epoch_s)
        return old

    def set_fill(self, volume_nl, refilled_epoch_s, refill_by_epoch_s):
        """The volume and the dates of the last refill, as a checked refill, a plan's
        refill-by days or the records at power-on give them."""
        self.volume_nl = volume_nl
        self.refilled_epoch_s = refilled_epoch_s
        self.refill_by_epoch_s = refill_by_epoch_s

    # --- state ------------------------------------------------------------------------------

    def level(self):
        v = self.volume_nl
        if v <= self.empty_nl:
            return EMPTY
        if v <= self.low_nl:
            return LOW
        return OK

    def refill_due(self, epoch_s):
        """True once the refill-by date has been reached."""
        rb = self.refill_by_epoch_s
        return rb is not None and epoch_s is not None and epoch_s >= rb
