"""Who holds each place, for an exporter host's services (pumprig.farm_export.Relays): a
request to a virtual rig's control relay or a bench's instrument service is obeyed only for
the client that holds the place those services belong to, as the labgrid coordinator says.

The client names itself in every signed request as labgrid names a client, HOST/USER
(LG_HOSTNAME and LG_USERNAME, else this host's name and the login name: pumprig.farm.identity).
The relay finds the place whose acquired resources include its own (EXPORTER/GROUP/
NetworkService/NAME) and obeys only its holder or a client the holder allowed (`labgrid-client
allow`), labgrid's own rule for using an acquired place. The name is declared by the client, as
labgrid's is: the token (pumprig.farm_auth) says the client belongs to the farm, the holder check
that it is not using a place someone else holds (a stale session, a place released and taken
by another client, a wrong --place).

PlaceWatch keeps the coordinator's places current in a thread: one gRPC stream subscribed to
place updates (labgrid's own client protocol), so a check that passes costs no round trip. A
check that would refuse first syncs with the coordinator (labgrid's Sync: answered once every
update before it is out), so a place acquired just before the request is seen. Without a view
of the coordinator (not reached yet, stream broken) every request is refused.
"""

import itertools
import queue
import threading

from pumprig.farm_auth import ControlRefused

RECONNECT_S = 1.0
READY_WAIT_S = 10.0


def resource_path(exporter, group, name):
    """How the coordinator names a service's resource: EXPORTER/GROUP/NetworkService/NAME."""
    return "%s/%s/NetworkService/%s" % (exporter, group, name)


def refusal(places, path, who):
    """Why `who` may not use the resource at `path`, or None when it may. places: {name:
    (acquired, allowed, acquired_resources)} as the coordinator has them."""
    held = [(n, p) for n, p in sorted(places.items()) if p[0] and path in p[2]]
    if not held:
        return ("%s belongs to no acquired place: acquire the place first (pumprig --port "
                "lg:PLACE, docs/farm.md)" % path)
    name, (acquired, allowed, _) = held[0]
    if not who:
        return ("place %s is held by %s; this request names no holder (a client older than "
                "the holder check)" % (name, acquired))
    if who != acquired and who not in allowed:
        return ("place %s is held by %s, not by this client (%s): a place someone else holds "
                "is not used (its holder can run `labgrid-client -p %s allow %s`)"
                % (name, acquired, who, name, who))
    return None


class FixedPlaces:
    """A view of the places that does not change ({name: (acquired, allowed, resources)}, as
    refusal() takes them): for tests without a coordinator."""

    def __init__(self, places):
        self.places = places

    def check(self, path, who):
        why = refusal(self.places, path, who)
        if why is not None:
            raise ControlRefused(why)


class PlaceWatch:
    """The coordinator's places, kept current from its update stream; check() for requests."""

    def __init__(self, coordinator, exporter, ready_wait_s=READY_WAIT_S):
        try:
            import grpc  # noqa: F401
            from labgrid.remote.generated import labgrid_coordinator_pb2  # noqa: F401
        except ImportError:
            from pumprig.errors import FarmError

            raise FarmError("the control relay checks who holds each place through the labgrid "
                            "coordinator: install labgrid here (pip install 'pumprig[farm]')"
                            ) from None
        self.coordinator = coordinator
        self.exporter = exporter
        self.ready_wait_s = ready_wait_s
        self.places = {}
        self.ready = threading.Event()
        self.error = "not connected yet"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._call = None
        self._out = None          # the open stream's outgoing queue
        self._syncs = {}          # sync id -> Event set when the coordinator answers it
        self._sync_ids = itertools.count(2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def check(self, path, who):
        """None when `who` may use the resource at `path`; ControlRefused otherwise."""
        if not self.ready.wait(self.ready_wait_s):
            raise ControlRefused("the relay cannot tell who holds the place of %s: no view of "
                                 "the labgrid coordinator at %s (%s)"
                                 % (path, self.coordinator, self.error))
        with self._lock:
            why = refusal(self.places, path, who)
        if why is not None and self._sync():
            with self._lock:
                why = refusal(self.places, path, who)
        if why is not None:
            raise ControlRefused(why)

    def _sync(self, timeout_s=5.0):
        """Wait until the coordinator has sent every update made before now; False if the
        stream is down or does not answer."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        with self._lock:
            out = self._out
            if out is None:
                return False
            sid = next(self._sync_ids)
            done = self._syncs[sid] = threading.Event()
        msg = pb.ClientInMessage()
        msg.sync.id = sid
        out.put(msg)
        try:
            return done.wait(timeout_s)
        finally:
            with self._lock:
                self._syncs.pop(sid, None)

    def stop(self):
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()

    # ------------------------------------------------------------------ the stream
    def _run(self):
        while not self._stopping.is_set():
            try:
                self._stream()
            except Exception as e:  # grpc errors, a coordinator going away: keep trying
                self.error = "%s: %s" % (type(e).__name__, e)
            self.ready.clear()
            with self._lock:
                self.places = {}
            self._stopping.wait(RECONNECT_S)

    def _stream(self):
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
        from labgrid.remote.generated import labgrid_coordinator_pb2_grpc as pbg
        from labgrid.util.version import labgrid_version

        out = queue.Queue()
        msg = pb.ClientInMessage()
        msg.startup.version = labgrid_version()
        msg.startup.name = "%s/pumprig-relay" % self.exporter
        out.put(msg)
        msg = pb.ClientInMessage()
        msg.subscribe.all_places = True
        out.put(msg)
        msg = pb.ClientInMessage()
        msg.sync.id = 1          # answered once the places sent on subscribing are all out
        out.put(msg)
        channel = grpc.insecure_channel(self.coordinator, options=[
            ("grpc.keepalive_time_ms", 7500), ("grpc.keepalive_timeout_ms", 10000)])
        try:
            stub = pbg.CoordinatorStub(channel)
            self._call = stub.ClientStream(iter(out.get, None))
            with self._lock:
                self._out = out
            if self._stopping.is_set():
                return
            places = {}
            for m in self._call:
                for u in m.updates:
                    kind = u.WhichOneof("kind")
                    if kind == "place":
                        p = u.place
                        places[p.name] = (p.acquired or None,
                                          frozenset(p.allowed), frozenset(p.acquired_resources))
                    elif kind == "del_place":
                        places.pop(u.del_place, None)
                with self._lock:
                    self.places = dict(places)
                    done = self._syncs.get(m.sync.id) if m.HasField("sync") else None
                if m.HasField("sync"):
                    self.error = None
                    self.ready.set()
                    if done is not None:
                        done.set()
        finally:
            with self._lock:
                self._out = None
            out.put(None)
            self._call = None
            channel.close()

