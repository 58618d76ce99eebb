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
from pumprig.errors import PumprigError

from . import inventory as inv
from .instruments import InstrumentError, RealTimeInstruments, StepCount


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
        self.service = None
        self.remote = frozenset()
        if lease.control is not None:
            self.spec = inv.RigSpec(name=lease.place, board="sim",
                                    instruments=frozenset(inv.FEATURES))
            return
        inst = set()
        if lease.service("instruments") is not None:
            self.service = farm.remote_service(lease, "instruments")
            try:
                self.remote = frozenset(self.service.call("features"))
            except BaseException:
                self.service.close()
                raise
            inst |= self.remote
        if lease.balance_url:
            inst.add("balance")
        if lease.power_switch:
            inst.add("power_relay")
        self.spec = inv.RigSpec(name=lease.place, board="rp2040", port=lease.url,
                                instruments=frozenset(inst),
                                balance={"port": lease.balance_url} if lease.balance_url else {})

    def instruments(self):
        """A board's instruments on this place: its GPIO adapter's through the exporter host's
        service (RemoteBenchInstruments) when the place has one, else BenchInstruments with
        only the balance and the place's power relay."""
        from .instruments import BenchInstruments

        relay = PlaceRelay(self.lease) if self.lease.power_switch else None
        if self.service is not None:
            return RemoteBenchInstruments(self.lease, self.service, self.remote, relay)
        return BenchInstruments(self.spec, relay=relay)

    def start(self, home):
        """The HilRig on this place, logged in (keys from the configured key store)."""
        from .instruments import SimInstruments
        from .rig import HilRig

        if not self.spec.is_sim:
            return HilRig.start(self.spec, home, inst=self.instruments())
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
        if self.service is not None:
            self.service.close()
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


# ---------------------------------------------------------------------------- a bench's instruments

# what the exporter host's instrument service answers (pumprig farm export --rigs --relay):
# op -> call on its BenchInstruments
SERVICE_OPS = {
    "features": lambda i, r: sorted(i.features),
    "steps": lambda i, r: list(i.steps()),
    "battery_mv": lambda i, r: i.battery_mv(),
    "set_battery_mv": lambda i, r: i.set_battery_mv(r.get("mv")),
    "power_cut": lambda i, r: i.power_cut(),
    "power_on": lambda i, r: i.power_on(),
    "powered": lambda i, r: i.powered(),
    "stall": lambda i, r: i.stall(bool(r.get("on"))),
    "occlude": lambda i, r: i.occlude(bool(r.get("on"))),
    "clear_faults": lambda i, r: i.clear_faults(),
    "readings": lambda i, r: i.readings(),
}
# the instruments a service can have: what the bench's GPIO adapter drives
SERVICE_FEATURES = frozenset(("steps", "power_relay", "battery_dac", "battery_adc",
                              "stall_injection", "occlusion_injection"))


def service_features(rig):
    """The instruments of a rigs-file rig (a dict) that its exporter host serves: those on its
    GPIO adapter; not the balance (a serial resource of its own) nor a power relay that is a
    labgrid resource ([rig.power])."""
    feats = set(rig.get("instruments") or ()) & SERVICE_FEATURES
    if rig.get("power") is not None:
        feats.discard("power_relay")
    return frozenset(feats)


def bench_instruments(rig, where, modules=None):
    """The BenchInstruments an exporter host serves for a rigs-file rig (its adapter opened
    through blinka here, on the host it is plugged into). modules: fake blinka, for tests."""
    from .instruments import BenchInstruments

    d = dict(rig, instruments=sorted(service_features(rig)))
    d.pop("balance", None)
    d.pop("power", None)
    try:
        spec = inv._spec(d, where)
    except inv.InventoryError as e:
        raise farm.FarmError(str(e)) from None
    return BenchInstruments(spec, modules=modules)


def serve(inst, req):
    """One request to the instrument service: the reply object."""
    fn = SERVICE_OPS.get(req.get("op"))
    if fn is None:
        return {"ok": False, "error": "unknown op %r" % (req.get("op"),)}
    try:
        return {"ok": True, "result": fn(inst, req)}
    except Exception as e:  # any failure goes back to the client; the service keeps running
        return {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}


class RemoteBenchInstruments(RealTimeInstruments):
    """A bench's instruments on another host: the GPIO adapter's through the exporter host's
    instrument service (signed requests, pumprig.farm_auth), the balance through the place's
    serial resource, the power relay through the place's `power` resource when it has one.
    Time is real: advance_s sleeps."""

    def __init__(self, lease, service, features, relay=None):
        super().__init__()
        self.lease = lease
        self.service = service
        self.remote = frozenset(features)
        self.relay = relay
        feats = set(self.remote)
        if relay is not None:
            feats.add("power_relay")
        if lease.balance_url:
            feats.add("balance")
        self.features = frozenset(feats)
        if "balance" in feats:
            self._open_balance(lease.balance_url)

    def _call(self, op, **args):
        try:
            return self.service.call(op, **args)
        except PumprigError as e:
            raise InstrumentError(str(e)) from None

    def steps(self):
        self._need("steps", "a STEP/DIR counter on the adapter")
        return StepCount(*self._call("steps"))

    def battery_mv(self):
        return self._call("battery_mv") if self.remote & {"battery_adc", "battery_dac"} else None

    def set_battery_mv(self, mv):
        self._need("battery_dac", "an MCP4725 driving the battery line")
        self._call("set_battery_mv", mv=mv)

    def power_cut(self):
        self._need("power_relay", "a relay in the board's supply")
        if self.relay is not None:
            self.relay.set(True)
        else:
            self._call("power_cut")

    def power_on(self):
        self._need("power_relay", "a relay in the board's supply")
        if self.relay is not None:
            self.relay.set(False)
        else:
            self._call("power_on")

    def powered(self):
        if self.relay is not None:
            return not self.relay.energised
        return bool(self._call("powered")) if "power_relay" in self.remote else True

    def occlude(self, on):
        self._need("occlusion_injection", "a pinch valve on the line")
        self._call("occlude", on=bool(on))

    def stall(self, on):
        self._need("stall_injection", "a GPIO forcing the driver's DIAG line")
        self._call("stall", on=bool(on))

    def readings(self):
        out = {"target": "bench", "rig": self.lease.place, "now_s": round(self.now_s(), 3)}
        try:
            out.update(self._call("readings"))
        except InstrumentError as e:
            out["service"] = "error: %s" % e
        out["now_s"] = round(self.now_s(), 3)
        if self._balance is not None:
            try:
                out["volume_nl"] = self.volume_nl()
            except PumprigError as e:
                out["volume_nl"] = "error: %s" % e
        if self.relay is not None:
            out["power"] = "cut" if self.relay.energised else "on"
        return out

    def close(self):
        self.service.close()
        super().close()
