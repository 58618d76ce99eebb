"""The virtual rig's stepper and plunger: motor segments the firmware starts, the pulses they
make in world time, and where they move the plunger.

A pulse moves the plunger one step in its segment's direction when the driver is enabled and
the plunger is not stalled. Behind an occlusion the volume pushed is held in the line (it shows
as pressure) until the occlusion clears. Volumes are kept in pL and reported in nL.
"""


class Segment:
    """One motor segment: pulse i at start_us + first_us + i * interval_us, i < count."""

    __slots__ = ("index", "start_us", "count", "first_us", "interval_us", "forward",
                 "end", "settled")

    def __init__(self, index, start_us, count, first_us, interval_us, forward):
        self.index = index
        self.start_us = start_us
        self.count = count
        self.first_us = first_us
        # 0: every pulse at first_us, as the board times it (hw/sim.py's end of a segment;
        # rp2's PIO refuses such a segment, the world must not stretch it: a pulse after the
        # board's end would be cut by its next segment)
        self.interval_us = max(0, interval_us)
        self.forward = forward
        self.end = None         # pulses made when aborted (None: ran or runs to completion)
        self.settled = 0        # pulses already applied to the plunger

    def limit(self):
        return self.count if self.end is None else self.end

    def pulses_at(self, t_us):
        """Pulses made by time t_us (a pulse exactly at t_us counts)."""
        t = t_us - self.start_us - self.first_us
        if t < 0:
            return 0
        if not self.interval_us:
            return self.limit()
        return min(self.limit(), t // self.interval_us + 1)

    def last_pulse_us(self):
        n = self.limit()
        if n <= 0:
            return self.start_us
        return self.start_us + self.first_us + (n - 1) * self.interval_us

    def as_dict(self):
        return {"index": self.index, "start_us": self.start_us, "count": self.count,
                "first_us": self.first_us, "interval_us": self.interval_us,
                "forward": self.forward, "made": self.limit() if self.end is not None else None,
                "aborted": self.end is not None}


class Stepper:
    """Segments, pulse counts and the plunger. `moves` is asked, for each batch of pulses,
    whether they move the plunger (the driver enabled and not stalled)."""

    def __init__(self, step_pl, moves):
        self.moves = moves
        self.segments = []
        self.true_step_pl = step_pl
        self.pulses_fwd = 0
        self.pulses_rev = 0
        self.steps_net = 0
        self.plunger_pl = 0
        self.held_pl = 0
        self.released_pl = 0
        self.stall = False
        self.occlusion = False

    def settle(self, t_us):
        """Apply the pulses made up to t_us under the current conditions."""
        if not self.segments:
            return
        seg = self.segments[-1]
        n = seg.pulses_at(t_us)
        new = n - seg.settled
        if new <= 0:
            return
        seg.settled = n
        if seg.forward:
            self.pulses_fwd += new
        else:
            self.pulses_rev += new
        if not self.moves() or self.stall:
            return
        d_pl = new * self.true_step_pl
        if seg.forward:
            self.steps_net += new
            self.plunger_pl += d_pl
            if self.occlusion:
                self.held_pl += d_pl
        else:
            self.steps_net -= new
            self.plunger_pl -= d_pl
            if self.held_pl:
                self.held_pl = max(0, self.held_pl - d_pl)

    def start(self, t_us, count, first_us, interval_us, forward):
        self.abort(t_us)
        seg = Segment(len(self.segments), t_us, max(0, count), max(0, first_us), interval_us,
                      forward)
        self.segments.append(seg)

    def abort(self, t_us):
        """Stop the running segment at t_us; returns the pulses it made."""
        self.settle(t_us)
        if not self.segments:
            return 0
        seg = self.segments[-1]
        if seg.end is None and seg.pulses_at(t_us) < seg.count:
            seg.end = seg.pulses_at(t_us)
            return seg.end
        return seg.pulses_at(t_us)

    def busy(self, t_us):
        if not self.segments:
            return False
        seg = self.segments[-1]
        return seg.pulses_at(t_us) < seg.limit()

    def set_occlusion(self, on):
        if self.occlusion and not on:
            self.released_pl += self.held_pl
            self.held_pl = 0
        self.occlusion = bool(on)

    def volume_out_nl(self):
        return (self.plunger_pl - self.held_pl) // 1000

    def log(self, since=0):
        return [s.as_dict() for s in self.segments[max(0, int(since)):]]
