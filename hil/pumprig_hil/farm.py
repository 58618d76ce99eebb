"""HIL rigs on labgrid places: `pytest hil --rig lg:PLACE1,PLACE2 -n 2` (docs/farm.md).

Each pytest worker acquires its own place for the session (worker N tries place N first), and
releases it at the end. A place exported with a control service is a virtual rig on another
host (time warp, power cut, world measurements through pumprig.farm.remote_world); one without
is a board on its serial port (and its balance, when the place has one).
"""

from __future__ import annotations

import re

from pumprig import farm

from . import inventory as inv


class RemoteVirtualRig:
    """What the harness uses of a virtual rig, for one on another host."""

    def __init__(self, lease):
        self.lease = lease
        self.name = lease.place
        self.link = lease.url
        self.balance_link = lease.balance_url
        self.world = farm.remote_world(lease)
        # the board's files are on the exporter host: nothing local to list
        self.fs = "(files of place %s are on its exporter host)" % lease.place

    def wipe_records(self):
        """Power cut, records deleted on the exporter host (keys kept), power on."""
        self.world.wipe_records()

    def stop(self):
        self.world.close()


class PlaceLock:
    """A worker's place, held until release(); like inventory.RigLock, plus start()."""

    def __init__(self, lease):
        self.lease = lease
        if lease.control is not None:
            self.spec = inv.RigSpec(name=lease.place, board="sim",
                                    instruments=frozenset(inv.FEATURES))
        else:
            bal = lease.balance_url
            self.spec = inv.RigSpec(name=lease.place, board="rp2040", port=lease.url,
                                    instruments=frozenset(["balance"] if bal else []),
                                    balance={"port": bal} if bal else {})

    def start(self, home):
        """The HilRig on this place, logged in (keys from the configured key store)."""
        from .instruments import SimInstruments
        from .rig import HilRig

        if not self.spec.is_sim:
            return HilRig.start(self.spec, home)
        vrig = RemoteVirtualRig(self.lease)
        try:
            hr = HilRig(self.spec, home, vrig, SimInstruments(vrig))
            hr.port = vrig.link
            hr.inst.clear_faults()
            hr.connect(wait_s=15)
        except BaseException:
            vrig.stop()
            raise
        return hr

    def release(self):
        self.lease.release()


def take_place(opt, worker, wait_s=0.0):
    """Acquire this worker's place among those `--rig lg:A,B` names."""
    m = re.search(r"(\d+)$", worker)
    try:
        lease = farm.acquire_any(farm.place_names(opt), wait=wait_s > 0,
                                 prefer=int(m.group(1)) if m else 0)
    except farm.FarmError as e:
        raise inv.InventoryError("--rig %s: %s" % (opt, e)) from None
    return PlaceLock(lease)
