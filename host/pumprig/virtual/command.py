"""`pumprig sim`: run a virtual rig in the foreground until Ctrl-C."""

import os


def add_parser(subparsers):
    p = subparsers.add_parser(
        "sim", help="run a virtual rig (MicroPython unix port on a pty, simulated physics)",
        description="Run a virtual rig until Ctrl-C: its serial port is a symlink at --link.")
    p.add_argument("--link", required=True, help="path of the serial port symlink to create")
    p.add_argument("--state", default=None,
                   help="state dir: board filesystem, uid, control socket "
                        "(default: $PUMPRIG_HOME/state/<link name>)")
    p.add_argument("--blank", action="store_true", help="start with an empty board filesystem")
    p.add_argument("--heap", default="384k", help="MicroPython heap (default 384k, about a Pico)")
    p.add_argument("--warp", action="store_true",
                   help="virtual time moves only when a control client advances it")
    p.set_defaults(func=run)


def run(args):
    """Errors a user can make (the link's folder, a file at the link, the heap, no MicroPython
    unix port) are PumprigErrors raised before anything is written: the CLI prints them as
    `pumprig: ...`. SIGTERM and SIGHUP stop the rig as Ctrl-C does (interpreter, links,
    registry)."""
    import signal

    from pumprig.folders import check_folder
    from pumprig.virtual import launcher
    from pumprig.virtual.supervisor import pumprig_home

    if args.state is not None:
        check_folder(args.state, "--state")
    state = args.state or os.path.join(pumprig_home(), "state",
                                       os.path.basename(os.path.abspath(args.link)))
    rig = launcher.Rig(args.link, state, heap=args.heap, warp=args.warp, blank=args.blank)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, rig.stop)
    try:
        print("virtual rig %s (uid %s)" % (rig.name, rig.uid))
        print("  serial port: %s" % rig.link)
        print("  balance:     %s" % rig.balance_link)
        print("  control:     %s" % rig.control_path)
        print("  state:       %s%s" % (rig.state, " (warp)" if args.warp else ""))
        print("Ctrl-C to stop.", flush=True)
        rig.run()
    except (launcher.Stop, KeyboardInterrupt):
        pass
    finally:
        rig.shutdown()      # run() has done it unless it never started
    return 0
