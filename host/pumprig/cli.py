"""The `pumprig` command line.

    pumprig [--port PORT] [--role ROLE] [--timeout S] <command> ...

One exit path: every failure is a pumprig.errors.PumprigError, printed as `pumprig: message`
on stderr with exit status 1 (2 for usage errors); never a traceback for a user mistake.
"""

import argparse
import csv
import datetime as dt
import importlib
import json
import os
import sys
import time

from pumprig import __version__, argtypes
from pumprig.errors import PumprigError

# ---------------------------------------------------------------------------------------------
# EXTENSIONS: modules that contribute subcommands. Each has `add_parser(subparsers)`, which adds
# its parsers and sets `func=handler(args) -> int | None` (args has port, role, timeout).
# A module that is not installed is skipped; any other import error is a bug and is raised.
EXTENSIONS = [
    "pumprig.virtual.command",  # sim
    "pumprig.flash",  # flash
    "pumprig.simulate",  # simulate
    "pumprig.bench",  # bench, calibrate
    "pumprig.demo",  # demo
    "pumprig.farm_command",  # farm
]
# ---------------------------------------------------------------------------------------------

_READ_ROLE = "patient"
_WRITE_ROLE = "clinician"


def _out(line=""):
    sys.stdout.write(line + "\n")


def _client(args, need_role):
    from pumprig.client import Client

    role = args.role or need_role
    return Client(args.port, role=role, timeout=args.timeout)


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
        _out("%-*s  %s" % (w, k, v))


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
        ("drug", "%s %s/mL" % (st.get("drug"), _fmt_mass(st.get("conc_ng_ml")))),
        ("plan CRC", st.get("plan_crc")),
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
    with _client(args, _WRITE_ROLE) as c:
        limits = (c.info or {}).get("limits")
        if limits and hasattr(plans, "validate_for_rig"):
            new = plans.validate_for_rig(new, limits)
        got = c.plan_get()
        cur = got.get("plan")
        for line in plans.diff(cur, new):
            _out(line)
        if cur is not None and core.crc(cur) == core.crc(new):
            gap = _therapy_gap(got, c.status())
            if gap is None:
                _out("nothing to send: the rig runs this plan (therapy generation %s)"
                     % got.get("gen"))
                return 0
            _out("the rig holds this plan, but %s: programming it again restarts it" % gap)
        if not args.yes:
            try:
                answer = input("Program this plan into the rig? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                _out("not programmed")
                return 1
        res = c.plan_set(new)
        want = core.crc(new)
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
        _json_out({"plan": plan, "summary": summary})
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
    conc = plans.parse_conc(args.conc, "--conc") if args.conc else None
    by = plans.parse_date(args.refill_by, "--refill-by") if args.refill_by else None
    from pumprig.errors import ProtocolError

    with _client(args, _WRITE_ROLE) as c:
        before = c.status()
        res = c.refill(vol, conc, by)
        gap = _refill_gap(before, c.status(), vol, conc, res)
    if gap is not None:
        raise ProtocolError("after the refill, %s: check with `pumprig status`" % gap)
    if args.json:
        _json_out(res)
    else:
        _table([("reservoir", _fmt_ml(res.get("reservoir_nl"))),
                ("bridge bolus", _fmt_ml(res.get("bridge_nl")))])  # fmt: skip
    return 0


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


def _offset_fn(tz_name):
    """offset_s(epoch_s) for a named zone, or the host's local zone."""
    if tz_name:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            zone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise PumprigError("unknown time zone %r (use a name like Europe/Paris)" % tz_name) from None
        return lambda t: int(dt.datetime.fromtimestamp(t, zone).utcoffset().total_seconds())
    return lambda t: time.localtime(t).tm_gmtoff


def next_offset_change(offset_at, now_s, horizon_days=400):
    """(epoch_s, new offset_s) of the next UTC-offset change within the horizon, or None."""
    cur = offset_at(now_s)
    day = 86_400
    t = now_s
    for _ in range(horizon_days):
        if offset_at(t + day) != cur:
            lo, hi = t, t + day  # offset(lo) == cur, offset(hi) != cur
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset_at(mid) == cur:
                    lo = mid
                else:
                    hi = mid
            return hi, offset_at(hi)
        t += day
    return None


def cmd_clock_sync(args):
    offset_at = _offset_fn(args.tz)
    with _client(args, _WRITE_ROLE) as c:
        now = int(time.time())
        nxt = next_offset_change(offset_at, now)
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


def monitor_lines(st, events):
    rows = status_lines(st)
    w = max(len(k) for k, _ in rows)
    lines = ["pumprig monitor  (Ctrl-C to quit)", ""]
    for k, v in rows[2:9]:
        lines.append("%-*s  %s" % (w, k, v))
    lines.append("")
    lines.append("recent events:")
    for e in events[-5:]:
        lines.append("  #%s %s %s" % (e["seq"], e["name"], json.dumps(e["data"], sort_keys=True)))
    return lines


def cmd_monitor(args):
    events = []
    with _client(args, _READ_ROLE) as c:
        if args.once:
            events += c.events()
            for line in monitor_lines(c.status(), events):
                _out(line)
            return 0
        sys.stdout.write("\x1b[2J")
        try:
            while True:
                st = c.status()
                events = (events + c.events())[-5:]
                sys.stdout.write("\x1b[H")
                for line in monitor_lines(st, events):
                    sys.stdout.write(line + "\x1b[K\n")
                sys.stdout.write("\x1b[J")
                sys.stdout.flush()
                events = (events + c.events(wait_s=args.interval))[-5:]
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
    _out("provisioned rig %s: keys written to the board and to %s" % (uid, path))
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
        _out("verified: clinician login works")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser():
    p = argparse.ArgumentParser(prog="pumprig", description="Drive a pumprig test rig.")
    p.add_argument("--version", action="version", version="pumprig " + __version__)
    p.add_argument("--port", default=os.environ.get("PUMPRIG_PORT"),
                   help="serial port or pyserial URL (default $PUMPRIG_PORT)")  # fmt: skip
    p.add_argument("--role", choices=("none", "patient", "clinician"), default=None,
                   help="role to log in as (default: the least the command needs)")  # fmt: skip
    p.add_argument("--timeout", type=argtypes.seconds, default=2.0, metavar="S",
                   help="seconds to wait for each answer (default 2)")  # fmt: skip
    p.add_argument("--wait", action="store_true",
                   help="--port lg:PLACE: wait for a place someone holds (docs/farm.md)")
    sub = p.add_subparsers(dest="command", metavar="<command>")
    sub.required = True

    def add(name, func, help_, json_flag=True):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    add("status", cmd_status, "show the rig's state")
    sp = add("program", cmd_program, "program a plan file into the rig", json_flag=False)
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
    add("alarm-test", cmd_alarm_test, "sound the alarm tones", json_flag=False)
    sp = add("log", cmd_log, "print the event log")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sp.add_argument("--since", type=argtypes.count, help="first sequence number")
    sp.add_argument("--limit", type=argtypes.count, help="at most this many events")
    sp = sub.add_parser("clock", help="set or show the rig's wall clock")
    csub = sp.add_subparsers(dest="clock_command", metavar="<sync|show>")
    csub.required = True
    sp = csub.add_parser("sync", help="set the rig's clock from this host (UTC, offset, next DST change)")
    sp.add_argument("--tz", help="time zone name (default: the host's local zone)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_clock_sync)
    sp = csub.add_parser("show", help="show the rig's clock")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_clock_show)
    sp = add("monitor", cmd_monitor, "live view of rate, reservoir, battery and alarms", json_flag=False)
    sp.add_argument("--once", action="store_true", help="print one view and exit")
    sp.add_argument("--interval", type=argtypes.seconds, default=1.0, metavar="S")
    sp = add("provision", cmd_provision, "generate and install role keys (physical access)", json_flag=False)
    sp.add_argument("--no-verify", action="store_true", help="do not log in afterwards")
    sp = add("list", cmd_list, "list attached boards and running virtual rigs")
    sp.add_argument("--farm", action="store_true",
                    help="the labgrid places instead: their rigs and who holds them")
    sp = sub.add_parser("plan", help="work with plan files offline")
    psub = sp.add_subparsers(dest="plan_command", metavar="<check>")
    psub.required = True
    sp = psub.add_parser("check", help="validate a plan file and show what it delivers")
    sp.add_argument("plan", metavar="PLAN.toml")
    sp.add_argument("--fill", help='fill volume for the projection, e.g. "20 mL"')
    sp.add_argument("--board", metavar="NAME",
                    help="check against this board's limits and pump path (board/boards/NAME.json)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_plan_check)

    for name in EXTENSIONS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                continue  # not written yet / not installed
            raise
        if hasattr(mod, "add_parser"):
            mod.add_parser(sub)
    return p


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
        args = parser.parse_args(argv)
        if args.command in _NEEDS_PORT and not args.port:
            parser.error("no port: give --port PORT or set PUMPRIG_PORT (see `pumprig list`)")
        rc = _run(args)
        return 0 if rc is None else int(rc)
    except PumprigError as e:
        sys.stderr.write("pumprig: %s\n" % e)
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
