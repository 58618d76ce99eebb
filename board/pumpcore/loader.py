"""The seam between resident and per-call firmware code: which modules stay in the heap, which
are loaded for one call and dropped after it, and the dropping (docs/architecture.md, "Memory:
resident and per-call code", states the rule; tests/host/test_imports.py enforces it).

RESIDENT  the modules hw/start.py loads at power-on, each after those it imports (of the board
          layers at the end, only this board's). Nothing here may import a module of CALLS at
          its top level.
CALLS     the per-call modules, each with the functions run() may call in it by name (the
          App's commands and its power-on restore); a module alone is imported by name inside
          the functions that need it.
Both are strings, not tuples of tuples: a table read a few times a day costs its bytes in the
resident heap all day (about 2 KB as tuples on the 64-bit unix port). Nothing keeps a reference to a per-call module,
          its functions or its classes: on MicroPython drop() forgets it after the step or
          command that loaded it, and its heap comes back at the next collection.

Per-call functions take public interfaces (the App, the Server, a Store) or plain data and
return values; what lasts is plain data on its owner, which assigns its own fields
(tests/host/test_imports.py lists the per-call functions that still assign an owner's fields,
each with its reason).
"""

import sys

RESIDENT = (  # with a space first and last: resident() finds " name " in it with no copy
    " pumpcore pumpcore.loader pumpcore.canon pumpcore.dose pumpcore.proto pumpcore.server "
    "pumpcore.store pumpcore.events pumpcore.alarms pumpcore.battery pumpcore.delivery "
    "pumpcore.limiter pumpcore.reservoir pumpcore.schedule pumpcore.app hw.common "
    "hw.pio_step hw.rp2 hw.esp32 hw.sim "  # the board layers: this board's
)

CALLS = (
    # clinician commands
    "clinician clock_get clock_set therapy_stop therapy_resume motor_run alarm_test ack "
    "plan_get maintenance alarms calib_get",
    "logpages log",  # the event log's pages
    "program plan_set refill calib_set",  # programming: plans, refills, calibration
    "patient bolus",  # the patient's bolus request
    "restore load load_keys",  # the records at power-on
    "session",  # hello, auth, the end of a session
    "auth",  # HMAC keys and MACs of a login
    "parse",  # the strict frame and JSON decoder
    "commands",  # the command dictionary: roles, arguments, ranges
    "plan",  # the plan rules (stage 1 of a plan check)
    "worst",  # the worst hour and day at the catheter tip, drug names (stage 2)
    "planning",  # schedule compilation, boluses, the bridge, a record's schedule
    "slots",  # periodic slots the clock jumped over or shows again
    "alarmlist",  # the alarm list's view, ack, restore
    "evlog",  # the event log's boot scan, compaction; a record's repair
    "evread",  # reading event lines, the log's pages (logpages loads it without evlog)
    "fault",  # crash records and the boot-loop guard
    "limitline",  # the dose limiter's line a plan declares, restore, wake time
    "batterystate",  # the battery monitor's thresholds and debounce, ERI countdown, restore
    "reservoirfill",  # a refill's checks, the projections, the reservoir's record form
    "settings",  # the battery's, reservoir's and tones' settings, checked at power-on
)

# MicroPython drops per-call modules after their call (CPython keeps them)
DROP = sys.implementation.name == "micropython"
DROP_SOURCE = False  # tests: drop .py modules too (a board drops only .mpy)
_PACKAGES = ("pumpcore.", "hw.")


def resident(name):
    """True if the module `name` is one of RESIDENT."""
    # no copy of RESIDENT: drop() asks for every module while a command's code is loaded
    # (the heap's peak), and a 281-byte copy there ran out of memory at 128-132 KB
    return RESIDENT.find(" " + name + " ") >= 0


def module_of(fn):
    """The CALLS module that offers `fn` by name, or None."""
    k = " " + fn + " "
    for e in CALLS:
        if (e + " ").find(k) > 0:
            return e[: e.find(" ")]
    return None


def run(fn, *args):
    """pumpcore.<module_of(fn)>.fn(*args), the module imported for the call (drop() forgets
    it after the step)."""
    name = "pumpcore." + module_of(fn)
    __import__(name)
    return getattr(sys.modules[name], fn)(*args)


def drop():
    """Forget the modules of pumpcore and hw not RESIDENT that came from .mpy files (or any,
    with DROP_SOURCE): the heap they took comes back at the next collection, as long as
    nothing else refers to them. Returns how many were dropped."""
    mods = sys.modules
    n = 0
    for name in list(mods):
        if resident(name):
            continue
        dot = name.find(".")
        if dot < 0 or name[: dot + 1] not in _PACKAGES:
            continue
        if not (DROP_SOURCE or getattr(mods[name], "__file__", "").endswith(".mpy")):
            continue
        del mods[name]
        n += 1
        pkg = mods.get(name[:dot])
        short = name[dot + 1 :]
        if pkg is not None and hasattr(pkg, short):
            delattr(pkg, short)
    return n
