"""`pumprig farm ...`: export this host's rigs to a labgrid farm, list places, power a virtual
rig on a place. `pumprig --port lg:PLACE <command>` itself is handled by pumprig.farm."""

import json
import os
import sys
import time

BENCH_OFF_S = 2.0  # a bench's supply stays cut this long in `farm power cycle` (labgrid's delay)


def add_parser(subparsers):
    p = subparsers.add_parser("farm", help="share rigs across hosts through labgrid (docs/farm.md)",
                              description="Rigs shared across lab hosts through labgrid.")
    sub = p.add_subparsers(dest="farm_command", metavar="<export|places|power>")
    sub.required = True
    e = sub.add_parser("export", help="write the labgrid exporter configuration for this host's "
                                      "boards and virtual rigs")
    e.add_argument("--out", default="-", help="exporter YAML file (default: stdout)")
    e.add_argument("--udev", default=None, metavar="FILE",
                   help="also write the udev rules the boards need (60-pumprig.rules)")
    e.add_argument("--address", default=None,
                   help="address other hosts reach this one at (default: this host's name)")
    e.add_argument("--control-port", type=int, default=None, metavar="N",
                   help="first TCP port of the virtual rigs' control relays (default 20500)")
    e.add_argument("--balance", action="append", default=[], metavar="BOARD_SN=BALANCE_SN",
                   help="a board's balance, by USB serial numbers (repeatable)")
    e.add_argument("--rigs", default=None, metavar="TOML",
                   help="also export the bench rigs of this rigs file (hil/rigs.toml): console, "
                        "balance and [rig.power], a labgrid power port or relay output")
    e.add_argument("--no-boards", action="store_true",
                   help="no boards found on USB (virtual rigs and --rigs only)")
    e.add_argument("--ser2net-nodelay", default=None, metavar="DIR",
                   help="also write DIR/ser2net, a wrapper that turns on TCP_NODELAY for "
                        "labgrid's ser2net (about 40 ms less per request); start the exporter "
                        "with PATH=DIR:$PATH")
    e.add_argument("--relay", action="store_true",
                   help="then serve, until Ctrl-C, the virtual rigs' control sockets and the "
                        "instrument services of the --rigs benches (their adapters opened here), "
                        "to the holder of each one's place ($LG_COORDINATOR says who)")
    e.add_argument("--exporter-name", default=None, metavar="NAME",
                   help="the name labgrid-exporter runs under here (its --name; default this "
                        "host's name, as labgrid's): --relay finds its places by it")
    e.set_defaults(func=cmd_export)
    pl = sub.add_parser("places", help="places, their rigs and who holds them")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_places)
    pw = sub.add_parser("power", help="power a rig on a place: a virtual rig through its "
                                      "control service, a bench through its `power` resource")
    pw.add_argument("action", choices=("on", "off", "cycle", "get"))
    pw.add_argument("--place", default=os.environ.get("LG_PLACE"),
                    help="a place this user already holds (default $LG_PLACE); or give "
                         "--port lg:PLACE to hold it for the command")
    pw.set_defaults(func=cmd_power)


def cmd_export(args):
    from pumprig import farm_export as fx
    from pumprig.errors import PumprigError
    from pumprig.ports import list_boards, list_virtual

    address = args.address or os.uname().nodename
    balances = {}
    for item in args.balance:
        board, sep, bal = item.partition("=")
        if not sep or not board or not bal:
            raise PumprigError("--balance %r: write BOARD_SERIAL=BALANCE_SERIAL" % item)
        balances[board] = bal
    base = args.control_port or fx.CONTROL_BASE_PORT
    vgroups, relays = fx.virtual_groups(list_virtual(), address, base)
    benches, services, rigs = {}, [], []
    if args.rigs:
        import tomllib

        try:
            with open(args.rigs, "rb") as f:
                rigs = tomllib.load(f).get("rig", [])
        except (OSError, ValueError) as e:
            raise PumprigError("cannot read %s: %s" % (args.rigs, e)) from None
        benches, services = fx.bench_groups(rigs, args.rigs, address, base + len(relays))
    listed = {r.get("serial") for r in rigs if r.get("serial")}
    boards = [] if args.no_boards else list_boards()
    # a board the rigs file lists is exported once, as that rig
    groups = fx.board_groups([b for b in boards if b.get("serial") not in listed], balances)
    groups.update(benches)
    groups.update(vgroups)
    text = fx.exporter_yaml(groups)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
        sys.stderr.write("pumprig: exporter configuration for %d rig(s) in %s\n"
                         % (len(groups), args.out))
    if args.udev:
        with open(args.udev, "w") as f:
            f.write(fx.udev_rules(boards))
    if args.ser2net_nodelay:
        fx.write_ser2net_wrapper(args.ser2net_nodelay)
    if not args.relay:
        return 0
    import socket

    from pumprig_hil.farm import bench_instruments

    from pumprig import farm
    from pumprig.farm_holders import PlaceWatch

    exporter = args.exporter_name or socket.gethostname()
    watch = PlaceWatch(farm.coordinator(), exporter)
    opened = []
    try:
        for port, rig, group in services:  # the adapters, opened here (blinka)
            opened.append((port, group, bench_instruments(rig, "%s, rig %s" % (args.rigs,
                                                                           rig.get("name")))))
        r = fx.Relays(relays, address, watch, exporter, benches=opened).start()
    except BaseException:
        watch.stop()
        for _, _, inst in opened:
            inst.close()
        raise
    if not watch.ready.wait(10):
        sys.stderr.write("pumprig: no answer yet from the labgrid coordinator at %s (%s): every "
                         "request is refused until it answers\n" % (farm.coordinator(),
                                                                     watch.error))
    ports = [x[0] for x in relays] + [x[0] for x in services]
    sys.stderr.write("pumprig: control relays on %s ports %s (Ctrl-C to stop)\n"
                     % (address, ", ".join(str(p) for p in ports) or "none"))
    sys.stderr.flush()
    try:
        import signal

        signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        r.stop()
    return 0


def place_rows(places):
    """One row per place: name, rigs (exporter/group of each match), holder."""
    rows = []
    for p in places:
        rigs = sorted({"/".join(m.split("/")[:2]) for m in p["matches"]})
        rows.append({"place": p["name"], "rigs": rigs, "held_by": p["acquired"],
                     "comment": p.get("comment") or ""})
    return rows


def print_places(as_json):
    from pumprig import farm

    rows = place_rows(farm.list_places())
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, sort_keys=True) + "\n")
        return 0
    if not rows:
        sys.stdout.write("no places on the coordinator %s (docs/farm.md)\n" % farm.coordinator())
        return 0
    sys.stdout.write("%-16s %-32s %s\n" % ("place", "rigs", "held by"))
    for r in rows:
        sys.stdout.write("%-16s %-32s %s\n" % (r["place"], ", ".join(r["rigs"]) or "-",
                                               r["held_by"] or "free"))
    return 0


def cmd_places(args):
    return print_places(args.json)


def cmd_power(args):
    """Acts on the place named by --port lg:PLACE, which the CLI holds around this command;
    with LG_PLACE set by labgrid (ExternalPowerDriver), that place."""
    from pumprig import farm

    lease = getattr(args, "lease", None)
    if lease is None:
        if not args.place:
            raise farm.FarmError("farm power needs --port lg:PLACE or --place PLACE")
        lease = farm.Lease(args.place).refresh()  # held by this user already: not acquired
    if lease.control is None:       # a bench: its `power` resource, through labgrid-client
        if args.action in ("off", "cycle"):
            lease.power("off")
        if args.action == "cycle":
            time.sleep(BENCH_OFF_S)
        if args.action in ("on", "cycle"):
            lease.power("on")
        powered = lease.power("get")
    else:
        with farm.remote_world(lease) as w:
            if args.action in ("off", "cycle"):
                w.power_cut()
            if args.action in ("on", "cycle"):
                w.power_on()
            powered = bool(w.status().get("powered", True))
    sys.stdout.write("power %s\n" % ("on" if powered else "off"))
    return 0
