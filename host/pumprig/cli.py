"""The `pumprig` command line.

    pumprig <command> [options] [--port PORT] [--role ROLE] [--timeout S] [--json]

The global options go anywhere on the line, before or after the command. Every command that
reads or writes a rig (or a plan) prints JSON with --json.

One exit path: every failure is a pumprig.errors.PumprigError, printed as `pumprig: message`
on stderr with exit status 1 (2 for usage errors); never a traceback for a user mistake.
"""

import argparse
import csv
import datetime as dt
import json
import os
import sys
import time

from pumprig import __version__, argtypes, bench, demo, farm_command, flash, simulate, tz, units
from pumprig.errors import PumprigError
from pumprig.virtual import command as sim_command

# ---------------------------------------------------------------------------------------------
# COMMANDS of other modules, a static table: each module's `add_parser(subparsers)` adds its
# parsers and sets `func=handler(args) -> int | None` (args has port, role, timeout, json).
# A module missing here is an ImportError at start, never a command silently left out.
COMMANDS = (
    (sim_command, ("sim",)),
    (flash, ("flash",)),
    (simulate, ("simulate",)),
    (bench, ("bench", "calibrate")),
    (demo, ("demo",)),
    (farm_command, ("farm",)),
)
# ---------------------------------------------------------------------------------------------

_READ_ROLE = "patient"
_WRITE_ROLE = "clinician"


def _out(line=""):
    sys.stdout.write(line + "\n")


def _client(args, need_role):
    from pumprig.client import Client

    role = args.role or need_role
    return Client(args.port, role=role, timeout=args.timeout)


def _err(line=""):
    sys.stderr.write(line + "\n")


def _json_out(obj):
    _out(json.dumps(obj, indent=2, sort_keys=True))


def _ml(nl):
    return None if nl is None else nl / 1_000_000


def _fmt_ml(nl):
    return "-" if nl is None else "%.3f mL" % (nl / 1_000_000)


def _fmt_mass(ng):
    if ng is None:
        return "-"
    if ng >= 1_000_000:
        return "%g mg" % (ng / 1_000_000)
    if ng >= 1_000:
        return "%g mcg" % (ng / 1_000)
    return "%d ng" % ng


def _fmt_epoch(s):
    if s is None:
        return "-"
    return dt.datetime.fromtimestamp(s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(rows):
    """Aligned `label  value` lines."""
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        _out("%-*s  %s" % (w, k, "-" if v is None else v))


# --------------------------------------------------------------------------- status


def status_json(st):
    """The status dict plus unit conversions (what `status --json` prints)."""
    out = dict(st)
    out["reservoir_ml"] = _ml(st.get("reservoir_nl"))
    out["delivered_ml"] = _ml(st.get("delivered_nl"))
    out["uncertain_ml"] = _ml(st.get("uncertain_nl"))
    rate = st.get("rate_nl_day")
    out["rate_ml_day"] = None if rate is None else rate / 1_000_000
    mv = st.get("battery_mv")
    out["battery_v"] = None if mv is None else mv / 1000
    out.setdefault("alarms", [])
    return out


def _drug_text(st):
    """'baclofen 2 mg/mL'; on a rig never programmed or filled, what to do instead of
    'None -/mL'."""
    drug, conc = st.get("drug"), st.get("conc_ng_ml")
    if drug is None and conc is None:
        return "none: no plan yet (`pumprig program PLAN.toml`)"
    if drug is None:
        return "no plan yet, reservoir at %s/mL" % _fmt_mass(conc)
    if conc is None:
        return "%s, concentration not set (`pumprig refill --conc`)" % drug
    return "%s %s/mL" % (drug, _fmt_mass(conc))


def status_lines(st):
    rate = st.get("rate_nl_day")
    rows = [
        ("firmware", "%s (protocol %s)" % (st.get("firmware"), st.get("protocol"))),
        ("board", st.get("board")),
        ("mode", "%s, therapy %s" % (st.get("mode"), st.get("therapy"))),
        ("rate", "-" if rate is None else "%.3f mL/day" % (rate / 1_000_000)),
        ("reservoir", _fmt_ml(st.get("reservoir_nl"))),
        ("delivered", "%s (%s steps)" % (_fmt_ml(st.get("delivered_nl")), st.get("delivered_steps"))),
        # counted but maybe not pulsed: the segments in flight at power cuts
        ("uncertain", _fmt_ml(st.get("uncertain_nl"))),
        ("battery", "-" if st.get("battery_mv") is None
         else "%.2f V (%s)" % (st["battery_mv"] / 1000, st.get("battery_state"))),  # fmt: skip
        ("alarms", ", ".join(st.get("alarms") or []) or "none"),
        ("drug", _drug_text(st)),
        ("plan CRC", st.get("plan_crc") or "- (no plan)"),
        ("clock", _fmt_epoch(st.get("epoch_s"))),
        ("LOW expected", _fmt_epoch(st.get("low_epoch_s"))),
        ("refill by", _fmt_epoch(st.get("refill_by_epoch_s"))),
        ("bolus lockout", _fmt_epoch(st.get("lockout_until_epoch_s"))),
        ("boluses (24 h)", st.get("boluses_24h")),
        ("stall detect", {"stallguard": "StallGuard on DIAG (driver UART confirmed)",
                          "off": "off: sgthrs or tcoolthrs is 0 in the board json",
                          "no answer": "off: the driver UART did not answer (docs/wiring.md)"}
         .get(st.get("stall_detect"), "driver errors only (no driver UART)")),
    ]
    if st.get("bad"):  # the FIRMWARE safe state (board/bootsafe.py)
        rows.append(("firmware check", "FAILED: %s: run `pumprig flash`"
                     % ", ".join(str(b) for b in st["bad"])))
    return rows


def cmd_status(args):
    with _client(args, _READ_ROLE) as c:
        st = c.status()
    if args.json:
        _json_out(status_json(st))
    else:
        _table(status_lines(st))
    return 0


# --------------------------------------------------------------------------- plans


def _plans():
    from pumprig import plans

    return plans


def cmd_program(args):
    plans = _plans()
    from pumpcore import plan as core

    from pumprig.errors import ProtocolError

    new = plans.load_plan(args.plan)
    want = core.crc(new)
    # with --json the human lines go to stderr and stdout holds one JSON object
    say = _err if args.json else _out
    result = {"plan_crc": want, "programmed": False}
    with _client(args, _WRITE_ROLE) as c:
        limits = (c.info or {}).get("limits")
        if limits and hasattr(plans, "validate_for_rig"):
            new = plans.validate_for_rig(new, limits)
        got = c.plan_get()
        cur = got.get("plan")
        result["diff"] = plans.diff(cur, new)
        result["previous_plan_crc"] = None if cur is None else core.crc(cur)
        for line in result["diff"]:
            say(line)
        if cur is not None and core.crc(cur) == core.crc(new):
            gap = _therapy_gap(got, c.status())
            if gap is None:
                say("nothing to send: the rig runs this plan (therapy generation %s)"
                    % got.get("gen"))
                if args.json:
                    _json_out(dict(result, gen=got.get("gen"), unchanged=True))
                return 0
            say("the rig holds this plan, but %s: programming it again restarts it" % gap)
        if not args.yes:
            try:
                if args.json:
                    sys.stderr.write("Program this plan into the rig? [y/N] ")
                    sys.stderr.flush()
                    answer = sys.stdin.readline()
                else:
                    answer = input("Program this plan into the rig? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                say("not programmed")
                if args.json:
                    _json_out(result)
                return 1
        res = c.plan_set(new)
        if res.get("plan_crc") != want:
            raise ProtocolError("the rig reports plan CRC %s, expected %s: check with "
                                "`pumprig status`" % (res.get("plan_crc"), want))
        after = c.plan_get()
        gap = _therapy_gap(after, c.status())
        if gap is None and after.get("plan_crc") != want:
            gap = "its plan CRC is %s" % after.get("plan_crc")
        if gap is None and not after.get("gen", 0) > got.get("gen", -1):
            gap = "its therapy generation did not move (%s)" % after.get("gen")
        if gap is not None:
            raise ProtocolError("after programming, %s: check with `pumprig status`" % gap)
    if args.json:
        _json_out(dict(result, programmed=True, gen=after.get("gen")))
    else:
        _out("programmed: plan CRC %s" % want)
    return 0


def _therapy_gap(got, st):
    """Why the rig's therapy state is not "running the plan it reports" (a plan.get answer
    and a status), or None. The plan CRC alone does not say it: a plan stored without the
    schedule state, the account or the reservoir it belongs to is not a running therapy."""
    if got.get("gen") is None or st.get("gen") is None:
        return "the rig reports no therapy generation (firmware before issue 11)"
    if "MEMORY" in (st.get("alarms") or []):
        return "its records failed their check (MEMORY alarm)"
    if st.get("therapy") != "running":
        reason = st.get("safe_reason")
        return "its therapy is %s%s" % (st.get("therapy"), " (%s)" % reason if reason else "")
    return None


def cmd_plan_check(args):
    plans = _plans()
    plan = plans.load_plan(args.plan)
    path_nl = step_pl = None
    if args.board:
        limits = plans.board_limits(args.board)
        plan = plans.validate_for_rig(plan, limits)
        path_nl = limits["pump_path_nl"]
        step_pl = limits["step_pl"]
    fill = plans.parse_volume_nl(args.fill, "--fill") if args.fill else None
    summary = plans.summarize(plan, fill_nl=fill, pump_path_nl=path_nl, step_pl=step_pl)
    if args.json:
        # the canonical wire plan, its canonical JSON and CRC (docs/protocol.md, "The plan CRC")
        from pumpcore import canon

        _json_out({"plan": plan, "wire": canon.dumps(plan), "plan_crc": summary["plan_crc"],
                   "summary": summary})
    else:
        for line in plans.describe(plan):
            _out(line)
        rows = [
            ("volume/day", _fmt_ml(summary.get("volume_nl_day"))),
            ("dose/day", _fmt_mass(summary.get("dose_ng_day"))),
            ("plan CRC", summary.get("plan_crc")),
        ]
        worst = summary["worst"]
        for key, label in (("1h", "worst hour"), ("24h", "worst 24 h")):
            rows.append((label, "%s (cap %s; %s as the dose limiter counts it)"
                          % (_fmt_mass(worst["ng_" + key]), _fmt_mass(worst["cap_ng_" + key]),
                             _fmt_mass(worst["counted_" + key]))))
        if fill is not None:
            rows.append(("fill", _fmt_ml(fill)))
            for key, label in (("days_to_low", "days to LOW"), ("days_to_empty", "days to EMPTY")):
                v = summary.get(key)
                rows.append((label, "over 2 years" if v is None else "%.1f" % v))
            proj = summary.get("projected_refill_epoch_s")
            rows.append(("projected refill",
                         _fmt_epoch(proj) + " (LOW, from today)" if proj else "-"))
            if summary.get("refill_by_epoch_s"):
                rows.append(("refill by", _fmt_epoch(summary["refill_by_epoch_s"])
                             + " (drug stability)"))
        _table(rows)
        for v in summary.get("violations") or []:
            _out("problem: " + v)
    return 1 if summary.get("violations") else 0


# --------------------------------------------------------------------------- therapy


def cmd_refill(args):
    plans = _plans()
    vol = plans.parse_volume_nl(args.volume, "--volume")
    if vol <= 0:
        raise PumprigError("--volume %s: give the volume put in, more than 0 mL" % args.volume)
    conc = plans.parse_conc(args.conc, "--conc") if args.conc else None
    if conc is not None and conc <= 0:
        raise PumprigError("--conc %s: give the new concentration, more than 0 mg/mL" % args.conc)
    by = plans.parse_date(args.refill_by, "--refill-by") if args.refill_by else None
    from pumprig.errors import ProtocolError

    if by is not None and by <= time.time():
        raise PumprigError("--refill-by %s: must be a date in the future (today is %s)"
                           % (args.refill_by, _fmt_epoch(time.time()).split()[0]))
    from pumprig.errors import DeviceError

    with _client(args, _WRITE_ROLE) as c:
        before = c.status()
        try:
            res = c.refill(vol, conc, by)
        except DeviceError as e:
            raise PumprigError(device_text(e, before)) from None
        gap = _refill_gap(before, c.status(), vol, conc, res)
    if gap is not None:
        raise ProtocolError("after the refill, %s: check with `pumprig status`" % gap)
    if args.json:
        _json_out(res)
    else:
        _table([("reservoir", _fmt_ml(res.get("reservoir_nl"))),
                ("bridge bolus", _fmt_ml(res.get("bridge_nl")))])  # fmt: skip
    return 0


# A refused request's argument (the protocol's name) -> (the CLI option, its human units)
_ARG_WORDS = {
    "volume_nl": ("--volume", lambda v: units.format_volume_nl(int(v))),
    "conc_ng_ml": ("--conc", lambda v: units.format_concentration(int(v))),
    "refill_by_epoch_s": ("--refill-by", lambda v: _fmt_epoch(int(v))),
}


def device_text(err, st=None):
    """A rig's refusal in the CLI's own terms: its option names and human units ("--volume
    must be 1 nL to 20 mL" for "volume_nl must be 1..20000000 (BAD_ARGS)"); `st` a status
    read just before, for the rig's clock."""
    import re

    text = err.detail
    for arg, (opt, fmt) in _ARG_WORDS.items():
        # the refill's own range check, or the command dictionary's ("an integer lo..hi")
        m = re.fullmatch(re.escape(arg) + r" must be (?:an integer )?(\d+)\.\.(\d+)", text)
        if m:
            return "%s must be %s to %s" % (opt, fmt(m.group(1)), fmt(m.group(2)))
        if text.startswith(arg + " must be a time in the future"):
            clock = (st or {}).get("epoch_s")
            return ("%s must be a date in the future%s" % (
                opt, " (the rig's clock reads %s)" % _fmt_epoch(clock) if clock else ""))
        text = text.replace(arg, opt)
    return "%s (%s)" % (text, err.code)


def _refill_gap(before, st, vol, conc, res):
    """Why the rig's whole therapy state after a refill does not show it (statuses before
    and after, the answer), or None: a new generation, the concentration, the reservoir, the
    bridge bolus pending when the concentration changed."""
    if st.get("gen") is None:
        return "the rig reports no therapy generation (firmware before issue 11)"
    if not st["gen"] > (before.get("gen") or 0):
        return "its therapy generation did not move (%s)" % st["gen"]
    if conc is not None and before.get("conc_ng_ml") is not None and \
            st.get("conc_ng_ml") != conc:
        return "its concentration is %s ng/mL, not %s" % (st.get("conc_ng_ml"), conc)
    left = st.get("reservoir_nl")
    if left is None or left > vol or left < vol - 100_000:
        return "its reservoir reads %s nL, not about %s" % (left, vol)
    changed = conc is not None and before.get("conc_ng_ml") not in (None, conc)
    if changed and (res.get("bridge_nl") or 0) <= 0 and before.get("therapy") == "running":
        return "the concentration changed with no bridge bolus"
    return None


def cmd_bolus(args):
    with _client(args, _READ_ROLE) as c:
        res = c.bolus()
    if args.json:
        _json_out(res)
    else:
        _table([
            ("dose", _fmt_mass(res.get("dose_ng"))),
            ("volume", _fmt_ml(res.get("volume_nl"))),
            ("duration", "%s min" % (None if res.get("dur_s") is None else res["dur_s"] / 60)),
            ("started", _fmt_epoch(res.get("started_epoch_s"))),
        ])  # fmt: skip
    return 0


def _alarm_lines(alarms):
    if not alarms:
        return ["no alarms"]
    out = ["%-14s %-8s %-8s %-5s %s" % ("kind", "level", "state", "acked", "since")]
    for a in alarms:
        out.append("%-14s %-8s %-8s %-5s %s" % (
            a.get("kind"), "critical" if a.get("critical") else "normal",
            "active" if a.get("active") else "cleared", "yes" if a.get("acked") else "no",
            _fmt_epoch(a.get("since_epoch_s"))))  # fmt: skip
    return out


def cmd_alarms(args):
    with _client(args, _READ_ROLE) as c:
        alarms = c.alarms()
    if args.json:
        _json_out(alarms)
    else:
        for line in _alarm_lines(alarms):
            _out(line)
    return 0


def cmd_ack(args):
    with _client(args, _WRITE_ROLE) as c:
        acked = c.ack(args.kind)
    if args.json:
        _json_out({"acked": acked})
    else:
        _out("acknowledged: " + (", ".join(acked) if acked else "nothing"))
    return 0


def cmd_alarm_test(args):
    with _client(args, _WRITE_ROLE) as c:
        c.alarm_test()
    if args.json:
        _json_out({"alarm_test": "started"})
    else:
        _out("alarm test started: listen for the critical then the non-critical tone")
    return 0


def cmd_log(args):
    fmt = "json" if args.json else args.format
    with _client(args, _READ_ROLE) as c:
        events = c.log_all(args.since, args.limit) if args.limit is None else c.log(args.since, args.limit).get("events", [])
    if fmt == "json":
        _json_out(events)
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["seq", "epoch_s", "ms", "kind", "data"])
        for e in events:
            w.writerow([e.get("seq"), e.get("epoch_s"), e.get("ms"), e.get("kind"),
                        json.dumps(e.get("data"), sort_keys=True)])  # fmt: skip
    else:
        _out("%6s  %-23s  %12s  %-16s %s" % ("seq", "time", "ms", "kind", "data"))
        for e in events:
            _out("%6s  %-23s  %12s  %-16s %s" % (
                e.get("seq"), _fmt_epoch(e.get("epoch_s")), e.get("ms"), e.get("kind"),
                json.dumps(e.get("data"), sort_keys=True)))  # fmt: skip
    return 0


# --------------------------------------------------------------------------- clock


def cmd_clock_sync(args):
    offset_at = tz.offset_fn(args.tz)
    with _client(args, _WRITE_ROLE) as c:
        now = int(time.time())
        nxt = tz.next_offset_change(offset_at, now)
        res = c.clock_set(now, offset_at(now), *(nxt or (None, None)))
    if args.json:
        _json_out(res)
    else:
        rows = [("clock set", _fmt_epoch(now)), ("UTC offset", "%+d s" % offset_at(now))]
        if nxt:
            rows.append(("next change", "%s to %+d s" % (_fmt_epoch(nxt[0]), nxt[1])))
        _table(rows)
    return 0


def cmd_clock_show(args):
    with _client(args, _READ_ROLE) as c:
        res = c.clock_get()
    if args.json:
        _json_out(res)
    else:
        _table([("clock", _fmt_epoch(res.get("epoch_s")) if res.get("set") else "not set"),
                ("UTC offset", "%+d s" % (res.get("offset_s") or 0))])  # fmt: skip
    return 0


# --------------------------------------------------------------------------- monitor


def _monitor_json(mon):
    """One JSON line per update: the status (as `status --json`), the recent events, when."""
    upd = mon.updated.strftime("%Y-%m-%dT%H:%M:%SZ") if mon.updated else None
    sys.stdout.write(json.dumps({"status": status_json(mon.status) if mon.status else None,
                                 "events": mon.events, "updated": upd,
                                 "problem": mon.problem}, sort_keys=True) + "\n")
    sys.stdout.flush()


def cmd_monitor(args):
    """Polls (pumprig.monitor): the port is free between updates for other commands."""
    from pumprig.monitor import Monitor

    mon = Monitor(lambda: _client(args, _READ_ROLE))
    if args.once:
        if not mon.update():
            raise PumprigError(mon.problem)
        if args.json:
            _monitor_json(mon)
        else:
            for line in mon.lines(status_lines):
                _out(line)
        return 0
    if args.json:  # one JSON object per line, per update (a log a program can follow)
        try:
            while True:
                mon.update()
                _monitor_json(mon)
                time.sleep(args.interval)       # the port is free meanwhile
        except KeyboardInterrupt:
            return 0
    tty = sys.stdout.isatty()
    if tty:
        sys.stdout.write("\x1b[2J")
    try:
        while True:
            mon.update()
            if tty:
                sys.stdout.write("\x1b[H")
                for line in mon.lines(status_lines):
                    sys.stdout.write(line + "\x1b[K\n")
                sys.stdout.write("\x1b[J")
            else:                               # a log or a pipe: one block per update
                sys.stdout.write("\n".join(mon.lines(status_lines)) + "\n\n")
            sys.stdout.flush()
            time.sleep(args.interval)           # the port is free meanwhile
    except KeyboardInterrupt:
        _out("")
    return 0


# --------------------------------------------------------------------------- rigs and keys


def cmd_list(args):
    if getattr(args, "farm", False):
        from pumprig.farm_command import print_places

        return print_places(args.json)
    from pumprig.ports import list_rigs

    rigs = list_rigs()
    if args.json:
        _json_out(rigs)
        return 0
    if not rigs:
        _out("no rigs found (plug a board in, or start one with `pumprig sim`)")
        return 0
    for r in rigs:
        extra = r.get("name") or r.get("serial") or ""
        ids = "%s:%s" % (r["vid"], r["pid"]) if "vid" in r else "uid %s" % r.get("uid")
        _out("%-24s %-22s %-14s %s" % (r.get("port"), r.get("kind"), ids, extra))
    return 0


def write_board_keys(port, keys_doc):
    """Write data/keys.json on a board through mpremote's raw REPL, then soft-reset it."""
    try:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport
    except ImportError:
        raise PumprigError("mpremote is not installed (pip install mpremote)") from None
    text = json.dumps(keys_doc, sort_keys=True)
    code = (
        "import os\n"
        "try:\n os.mkdir('data')\nexcept OSError:\n pass\n"
        "f=open('data/keys.json.tmp','w')\nf.write(%r)\nf.close()\n"
        "os.rename('data/keys.json.tmp','data/keys.json')\n" % text
    )
    try:
        t = SerialTransport(port, baudrate=115200)
    except Exception as e:  # mpremote raises plain exceptions for a missing or busy port
        raise PumprigError("cannot open %s for provisioning: %s" % (port, e)) from None
    try:
        t.enter_raw_repl()
        t.exec(code)
        t.exit_raw_repl()
        t.serial.write(b"\x04")  # soft reset: the firmware restarts with the new keys
    except TransportError as e:
        raise PumprigError("provisioning failed on %s: %s" % (port, e)) from None
    finally:
        t.close()


def cmd_provision(args):
    from pumprig import keys as keystore
    from pumprig.client import Client
    from pumprig.ports import list_virtual

    for r in list_virtual():
        if r.get("port") and args.port and os.path.realpath(r["port"]) == os.path.realpath(args.port):
            raise PumprigError("%s is a virtual rig: it provisions its own keys at launch" % args.port)
    with Client(args.port, role=None, timeout=args.timeout) as c:
        uid = c.info.get("uid")
    if not uid:
        raise PumprigError("the rig did not report a uid")
    new = keystore.generate()
    write_board_keys(args.port, new)
    path = keystore.KeyStore().save(uid, new)
    say = _err if args.json else _out
    say("provisioned rig %s: keys written to the board and to %s" % (uid, path))
    if not args.no_verify:
        deadline = time.monotonic() + max(5.0, args.timeout)
        while True:
            try:
                with Client(args.port, role="clinician", timeout=args.timeout):
                    break
            except PumprigError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the board is restarting after the soft reset
        say("verified: clinician login works")
    if args.json:
        _json_out({"uid": uid, "keys": str(path), "verified": not args.no_verify})
    return 0


# --------------------------------------------------------------------------- parser


# Options of the whole line, accepted before or after the command: (flags, keywords). Each
# is declared on the top parser with its default and on every command's parser with
# default=SUPPRESS, so that where it is given does not matter and a command's parser leaves
# the top parser's value alone when it is not given there.
GLOBAL_OPTIONS = (
    (("--port",), {"help": "serial port or pyserial URL (default $PUMPRIG_PORT)"}),
    (("--role",), {"choices": ("none", "patient", "clinician"),
                   "help": "role to log in as (default: the least the command needs)"}),
    (("--timeout",), {"type": argtypes.seconds, "metavar": "S",
                      "help": "seconds to wait for each answer (default 2)"}),
    (("--json",), {"action": "store_true", "help": "machine-readable output (JSON)"}),
    (("--wait",), {"action": "store_true",
                   "help": "--port lg:PLACE: wait for a place someone holds (docs/farm.md)"}),
)


def _global_defaults():
    return {"port": os.environ.get("PUMPRIG_PORT"), "role": None, "timeout": 2.0, "json": False,
            "wait": False}


def _add_globals(parser, top=False):
    """Declare the global options on `parser`; an option the parser already has (a command
    with its own --port, say) is left to it."""
    for flags, kw in GLOBAL_OPTIONS:
        kw = dict(kw)
        if not top:
            kw["default"] = argparse.SUPPRESS
        try:
            parser.add_argument(*flags, **kw)
        except argparse.ArgumentError:
            pass  # declared by the command itself


def build_parser():
    p = argparse.ArgumentParser(prog="pumprig", description="Drive a pumprig test rig.")
    p.add_argument("--version", action="version", version="pumprig " + __version__)
    _add_globals(p, top=True)
    p.set_defaults(**_global_defaults())
    sub = p.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    leaves = []

    def add(name, func, help_, parent=sub):
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        leaves.append(sp)
        return sp

    add("status", cmd_status, "show the rig's state")
    sp = add("program", cmd_program, "program a plan file into the rig")
    sp.add_argument("plan", metavar="PLAN.toml")
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sp = add("refill", cmd_refill, "record a refill")
    sp.add_argument("--volume", required=True, help='volume put in, e.g. "20 mL"')
    sp.add_argument("--conc", help='new concentration, e.g. "2000 mcg/mL"')
    sp.add_argument("--refill-by", help="refill-by date, e.g. 2027-03-01")
    add("bolus", cmd_bolus, "start a patient bolus")
    add("alarms", cmd_alarms, "list alarms")
    sp = add("ack", cmd_ack, "acknowledge alarms (all, or one KIND)")
    sp.add_argument("kind", nargs="?", metavar="KIND")
    add("alarm-test", cmd_alarm_test, "sound the alarm tones")
    sp = add("log", cmd_log, "print the event log")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sp.add_argument("--since", type=argtypes.count, help="first sequence number")
    sp.add_argument("--limit", type=argtypes.count, help="at most this many events")
    sp = sub.add_parser("clock", help="set or show the rig's wall clock")
    leaves.append(sp)
    csub = sp.add_subparsers(dest="clock_command", metavar="<sync|show>")
    csub.required = True
    sp = add("sync", cmd_clock_sync,
             "set the rig's clock from this host (UTC, offset, next DST change)", csub)
    sp.add_argument("--tz", help="time zone name (default: the host's local zone)")
    add("show", cmd_clock_show, "show the rig's clock", csub)
    sp = add("monitor", cmd_monitor, "live view of rate, reservoir, battery and alarms")
    sp.add_argument("--once", action="store_true", help="print one view and exit")
    sp.add_argument("--interval", type=argtypes.seconds, default=1.0, metavar="S")
    sp = add("provision", cmd_provision, "generate and install role keys (physical access)")
    sp.add_argument("--no-verify", action="store_true", help="do not log in afterwards")
    sp = add("list", cmd_list, "list attached boards and running virtual rigs")
    sp.add_argument("--farm", action="store_true",
                    help="the labgrid places instead: their rigs and who holds them")
    sp = sub.add_parser("plan", help="work with plan files offline")
    leaves.append(sp)
    psub = sp.add_subparsers(dest="plan_command", metavar="<check>")
    psub.required = True
    sp = add("check", cmd_plan_check, "validate a plan file and show what it delivers", psub)
    sp.add_argument("plan", metavar="PLAN.toml")
    sp.add_argument("--fill", help='fill volume for the projection, e.g. "20 mL"')
    sp.add_argument("--board", metavar="NAME",
                    help="check against this board's limits and pump path (board/boards/NAME.json)")

    for mod, names in COMMANDS:
        mod.add_parser(sub)
        leaves.extend(sub.choices[n] for n in names)
    for sp in leaves:
        _add_globals(sp)
    return p


def at_repl_text(port, err):
    """What to do with a board at the MicroPython REPL: a blank one (no pumprig manifest on
    it) needs `pumprig flash`; a flashed one left there by mpremote needs a reset."""
    from pumprig import flash as flashmod

    try:
        manifest = flashmod.probe(port)[3]
    except PumprigError:
        manifest = "unknown"  # the probe failed: keep the client's own advice
    if manifest is None:
        return ("%s runs MicroPython but no pumprig firmware: install it with `pumprig flash "
                "--port %s`" % (port, port))
    return str(err)


_NEEDS_PORT = {"status", "program", "refill", "bolus", "alarms", "ack", "alarm-test", "log",
               "clock", "monitor", "provision"}  # fmt: skip


_NO_PLACE = {"list", "plan", "sim", "simulate", "demo"}  # commands that never use the port


def _run(args):
    """Run the command; a labgrid place (--port lg:PLACE) is held around it (docs/farm.md)."""
    from pumprig import farm

    if (not farm.is_place(args.port) or args.command in _NO_PLACE
            or getattr(args, "farm_command", "power") != "power"):
        return args.func(args)
    with farm.hold(args.port, wait=args.wait) as lease:
        args.port, args.lease = lease.url, lease
        if getattr(args, "balance", "") is None:
            args.balance = lease.balance_url  # bench: the place's balance
        return args.func(args)


def main(argv=None):
    try:
        parser = build_parser()
        argv = sys.argv[1:] if argv is None else list(argv)
        args = parser.parse_args(argv)
        # a command that declares its own --json (default False) would hide one given before
        # the command: the flag anywhere on the line counts
        words = argv[:argv.index("--")] if "--" in argv else argv
        args.json = bool(getattr(args, "json", False)) or "--json" in words
        if args.command in _NEEDS_PORT and not args.port:
            parser.error("no port: give --port PORT or set PUMPRIG_PORT (see `pumprig list`)")
        rc = _run(args)
        return 0 if rc is None else int(rc)
    except PumprigError as e:
        port = getattr(e, "at_repl", None)
        sys.stderr.write("pumprig: %s\n" % (at_repl_text(port, e) if port else e))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("pumprig: interrupted\n")
        return 1
    except BrokenPipeError:
        return 1
    except SystemExit as e:  # argparse: usage errors (2), --help/--version (0)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


if __name__ == "__main__":
    sys.exit(main())
