"""Alarm kinds, the latched alarm list, and the buzzer/LED pattern.

Latching: an alarm is listed from raise_() until it is both acknowledged and its condition
has cleared (in either order). Re-raising an alarm whose condition is still present does
nothing. Acknowledging silences it.

Output: the highest severity among unacknowledged alarms selects the pattern.
- critical: two tones, hi/lo alternating (4 x (250 ms hi, 250 ms lo)), repeated every 10 min;
  LED blinking at 1 Hz.
- non-critical: one tone (3 x 500 ms on / 500 ms off), repeated every 60 min; LED on.
- all acknowledged (or none): silence, LED off.
A pattern starts at once when the severity changes or an alarm is (re)raised. output(now_ms)
returns what to drive now and the next time that changes, so the app sleeps until then.

What runs only at boot or on a clinician's command is per call (pumpcore.loader): building the
patterns in pumpcore.settings (App.__init__); restoring the list, the `alarms` view and `ack`
in pumpcore.alarmlist (pumpcore.restore, pumpcore.clinician).
"""

from pumpcore import const

EMPTY = "EMPTY"
EOS = "EOS"
STALL = "STALL"
OCCLUSION = "OCCLUSION"
MEMORY = "MEMORY"
BATTERY_FAULT = "BATTERY_FAULT"
LOW = "LOW"
REFILL_BY = "REFILL_BY"
ERI = "ERI"
RESET = "RESET"
CLOCK = "CLOCK"
CAP_REACHED = "CAP_REACHED"  # the dose limiter holds delivery (pumpcore.limiter)
FAULT = "FAULT"  # the loop failed and the board was reset (pumpcore.fault)
MAINTENANCE = "MAINTENANCE"  # a clinician stopped therapy for maintenance (REPL open)

CRITICAL_KINDS = (EMPTY, EOS, STALL, OCCLUSION, MEMORY, BATTERY_FAULT, CAP_REACHED, FAULT)
NONCRITICAL_KINDS = (LOW, REFILL_BY, ERI, RESET, CLOCK, MAINTENANCE)
KINDS = CRITICAL_KINDS + NONCRITICAL_KINDS

# severities (higher is worse)
NONE = const(0)
NONCRITICAL = const(1)
CRITICAL = const(2)

# entry fields (also in pumpcore.alarmlist)
_SINCE = const(0)
_ACTIVE = const(1)
_ACKED = const(2)
_CLEARED = const(3)



def is_critical(kind):
    if kind in CRITICAL_KINDS:
        return True
    if kind in NONCRITICAL_KINDS:
        return False
    raise ValueError("unknown alarm kind %r" % (kind,))


def severity(kind):
    return CRITICAL if is_critical(kind) else NONCRITICAL


# --- tone and LED pattern -------------------------------------------------------------------


def _segment(pattern, rel_ms, repeat_ms):
    """(freq_hz, end_rel_ms) of the pattern at rel_ms after its start. The pattern is a tuple
    of (freq_hz, dur_ms), silent after its end; it restarts every repeat_ms (None: once)."""
    base = 0
    if repeat_ms is not None:
        base = rel_ms - rel_ms % repeat_ms
        rel_ms -= base
    acc = 0
    for f, d in pattern:
        acc += d
        if rel_ms < acc:
            return f, base + acc
    if repeat_ms is None:
        return 0, None
    return 0, base + repeat_ms


class TonePlayer:
    """Buzzer frequency and LED state over time for a severity level (NONE/NONCRITICAL/
    CRITICAL). Pure: feed it the level and now_ms; output(now_ms) tells what to drive and
    when that next changes. All durations in ms."""

    def __init__(self, patterns):
        """patterns: what pumpcore.settings.tones(...) makes of the settings (checked
        there, at boot): (critical, single, critical_repeat_ms, single_repeat_ms, blink_ms,
        test pattern, test_ms); a pattern is a tuple of (freq_hz, dur_ms)."""
        (self.critical_pattern, self.single_pattern, self.critical_repeat_ms,
         self.single_repeat_ms, self.blink_ms, self.test_pattern, self.test_ms) = patterns
        self.level = NONE
        self._t0 = 0
        self._test_t0 = None

    def set_level(self, level, now_ms, restart=False):
        """Select the pattern; it (re)starts at now_ms if the level changed or restart."""
        if level != self.level or restart:
            self.level = level
            self._t0 = now_ms

    def alarm_test(self, now_ms):
        """Play the critical then the non-critical pattern once, from now_ms (LED on)."""
        self._test_t0 = now_ms

    def output(self, now_ms):
        """(freq_hz, led_on, next_ms): drive these now; nothing changes before next_ms
        (None: nothing changes until the level does)."""
        if self._test_t0 is not None:
            rel = now_ms - self._test_t0
            if 0 <= rel < self.test_ms:
                f, end = _segment(self.test_pattern, rel, None)
                return f, True, self._test_t0 + end
            self._test_t0 = None
        level = self.level
        if level == NONE:
            return 0, False, None
        rel = now_ms - self._t0
        if rel < 0:
            rel = 0
        if level == CRITICAL:
            f, end = _segment(self.critical_pattern, rel, self.critical_repeat_ms)
            if f == 0:
                # between bursts the LED stays on: a blink costs a wake-up every blink_ms
                return 0, True, self._t0 + end
            phase = rel // self.blink_ms
            led = not (phase & 1)
            blink_next = (phase + 1) * self.blink_ms
            if blink_next < end:
                end = blink_next
            return f, led, self._t0 + end
        f, end = _segment(self.single_pattern, rel, self.single_repeat_ms)
        return f, True, self._t0 + end


# --- the alarm list -------------------------------------------------------------------------


class Alarms:
    """The latched alarm list. Times: epoch_s wall clock (may be None if unknown) for the
    record, now_ms for the tone pattern."""

    def __init__(self, player):
        self.player = player
        # kind -> [since_epoch_s, active, acked, cleared_epoch_s] (pumpcore.alarmlist reads and
        # acknowledges them, and restores them at boot)
        self.items = {}
        self.gen = 0  # bumped when an alarm is (re)raised or restored: restarts the pattern
        self._played_gen = 0

    def __contains__(self, kind):
        return kind in self.items

    def raise_(self, kind, epoch_s):
        """Raise (or re-raise) an alarm. Returns True if it became active now, False if its
        condition was already active (nothing changes)."""
        is_critical(kind)
        e = self.items.get(kind)
        if e is None:
            self.items[kind] = [epoch_s, True, False, None]
        elif e[_ACTIVE]:
            return False
        else:
            # latched (unacknowledged, condition had cleared): the condition is back
            e[_ACTIVE] = True
            e[_ACKED] = False
            e[_CLEARED] = None
        self.gen += 1
        return True

    def condition_cleared(self, kind, epoch_s):
        """The condition behind an alarm has gone. An acknowledged alarm is removed; an
        unacknowledged one stays listed (latched) until ack. Returns True if it changed."""
        is_critical(kind)
        e = self.items.get(kind)
        if e is None or not e[_ACTIVE]:
            return False
        if e[_ACKED]:
            del self.items[kind]
        else:
            e[_ACTIVE] = False
            e[_CLEARED] = epoch_s
        return True

    # --- queries ----------------------------------------------------------------------------

    def active(self):
        """Every listed kind (condition present or latched), critical first, oldest first."""

        def key(k):
            since = self.items[k][_SINCE]
            return (0 if k in CRITICAL_KINDS else 1, -1 if since is None else since, k)

        return sorted(self.items, key=key)

    def condition_active(self, kind):
        e = self.items.get(kind)
        return e is not None and e[_ACTIVE]

    def level(self):
        """Highest severity among unacknowledged alarms (NONE, NONCRITICAL, CRITICAL)."""
        lv = NONE
        for k, e in self.items.items():
            if not e[_ACKED]:
                if k in CRITICAL_KINDS:
                    return CRITICAL
                lv = NONCRITICAL
        return lv

    # --- buzzer and LED ---------------------------------------------------------------------

    def output(self, now_ms):
        """(freq_hz, led_on, next_ms) for now; next_ms is when that next changes (None: not
        until an alarm changes). Call after every raise/ack/clear and at next_ms."""
        restart = self.gen != self._played_gen
        self._played_gen = self.gen
        self.player.set_level(self.level(), now_ms, restart)
        return self.player.output(now_ms)

    def alarm_test(self, now_ms):
        self.player.alarm_test(now_ms)

    # --- persistence ------------------------------------------------------------------------

    def load(self, items):
        """Power-on: the list pumpcore.alarmlist.restore read from the state record."""
        self.items = items
        self.gen += 1

    def to_dict(self):
        items = []
        for k in self.active():
            e = self.items[k]
            items.append([k, e[_SINCE], e[_ACTIVE], e[_ACKED], e[_CLEARED]])
        return {"alarms": items}
