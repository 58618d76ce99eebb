"""HIL rigs on labgrid places: `pytest hil --rig lg:PLACE1,PLACE2 -n 2` (docs/farm.md).

Each pytest worker acquires its own place for the session (worker N tries place N first), and
releases it at the end. A place exported with a control service is a virtual rig on another
host (time warp, power cut, world measurements through pumprig.farm.remote_world); one without
is a board on its serial port (and its balance, when the place has one), and its power relay
when the place has a `power` resource (a labgrid power port or digital output, switched through
labgrid-client: PlaceRelay).
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


class PlaceRelay:
    """A bench's power relay on a place (the instruments' Relay interface): energised means the
    supply is cut. Switched, and read back, through labgrid-client (pumprig.farm.Lease.power)."""

    def __init__(self, lease):
        self.lease = lease

    def set(self, energise):
        self.lease.power("off" if energise else "on")

    @property
    def energised(self):
        return not self.lease.power("get")


class PlaceLock:
    """A worker's place, held until release(); like inventory.RigLock, plus start()."""

    def __init__(self, lease):
        self.lease = lease
        if lease.control is not None:
            self.spec = inv.RigSpec(name=lease.place, board="sim",
                                    instruments=frozenset(inv.FEATURES))
        else:
            bal = lease.balance_url
            inst = (["balance"] if bal else []) + (["power_relay"] if lease.power_switch else [])
            self.spec = inv.RigSpec(name=lease.place, board="rp2040", port=lease.url,
                                    instruments=frozenset(inst),
                                    balance={"port": bal} if bal else {})

    def start(self, home):
        """The HilRig on this place, logged in (keys from the configured key store)."""
        from .instruments import SimInstruments
        from .rig import HilRig

        if not self.spec.is_sim:
            relay = PlaceRelay(self.lease) if self.spec.has("power_relay") else None
            return HilRig.start(self.spec, home, relay=relay)
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
