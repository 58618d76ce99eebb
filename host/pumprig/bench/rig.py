"""The bench's interface to a pump rig, and the rigs that implement it.

:class:`BenchRig` is what the procedures (:mod:`pumprig.bench.procedures`) need: a clock, the
rate, raw steps, the calibration, and a description for the report. Two implementations:

- :class:`ProtocolRig`: a real board (or any rig) over :class:`pumprig.client.Client`, on the
  host's monotonic clock (the procedures sleep).
- :class:`VirtualBenchRig`: the same commands to a virtual rig's firmware, but the clock is the
  world's virtual clock and waiting advances it (warp), so a two-hour run takes seconds.

:func:`open_rig` picks one from a port: ``"sim"`` starts a throwaway virtual rig with the
firmware installed (and its virtual balance); a port that matches a running virtual rig
registered in ``$PUMPRIG_HOME/rigs/*.json`` (``pumprig sim --link L``) drives that rig in
virtual time; anything else is a board.

What the rig commands are (all clinician role):

``start_rate(r)``  ``therapy.stop`` then ``motor.run {steps, rate_nl_day: r}``: the firmware runs
                   ``steps`` at a constant rate, therapy stopped, timing the steps from its own
                   calibration. ``steps`` covers the expected run (``expect_run_s``) with a
                   margin, so a host that dies does not leave the motor running for days.
``stop()``         ``therapy.stop`` (aborts a motor.run).
``run_steps(n)``   ``motor.run {steps: n}`` at the firmware's pull-in rate, then wait until the
                   status ``mode`` is no longer ``"bench"``.
``get/set_step_pl`` ``calib.get`` / ``calib.set`` (the CRC-protected ``calib`` record).

Therapy is stopped for the measurement; if it was running when the rig was opened it is resumed
by :meth:`ProtocolRig.close`.
"""

import math
import os
import shutil
import tempfile
import time

from pumprig.errors import PumprigError


class BenchError(PumprigError):
    """A bench procedure could not produce a trustworthy result."""


class BenchRig:
    """What the bench procedures need from a pump rig. Subclass it (or provide the same
    methods); every method here raises NotImplementedError.

    Times are seconds on one monotonic clock (the world's virtual clock on the virtual rig,
    the host's monotonic clock on a real bench).
    """

    def now_s(self):
        """Current time, seconds (float)."""
        raise NotImplementedError

    def wait_until_s(self, t_s):
        """Return once ``now_s() >= t_s``. Virtual rig: advance the world's clock (the firmware
        runs meanwhile); real bench: sleep. Returns at once if ``t_s`` is past."""
        raise NotImplementedError

    def start_rate(self, rate_nl_day):
        """Deliver continuously at ``rate_nl_day`` (integer nL/day) from now until stop()."""
        raise NotImplementedError

    def stop(self):
        """Stop any delivery (rate or steps); the motor is idle when this returns."""
        raise NotImplementedError

    def run_steps(self, steps):
        """Make ``steps`` forward motor steps (bench/calibration move, therapy stopped) and
        return when the last one is done."""
        raise NotImplementedError

    def get_step_pl(self):
        """The rig's calibration: picolitres per step (int)."""
        raise NotImplementedError

    def set_step_pl(self, step_pl):
        """Store a new calibration (int pL per step) on the rig."""
        raise NotImplementedError

    def expect_run_s(self, seconds):
        """Optional hint before :meth:`start_rate`: the run should last about ``seconds`` (a
        rig may bound its delivery with it). The default ignores it."""

    def describe(self):
        """What the report records about the rig: a dict with any of ``uid``, ``board``,
        ``firmware``, ``protocol``, ``plan_crc``, ``virtual``. The default knows nothing."""
        return {}

    def close(self):
        """Release the rig (connections, a throwaway virtual rig). The default does nothing."""


MAX_MOTOR_RUN_STEPS = 10_000_000  # cmd_motor_run's limit
ASSUMED_MOVE_HZ = 50  # the firmware's default pull-in rate: only used to pace the polling


def _steps_for(rate_nl_day, step_pl, seconds):
    """Steps the firmware makes in ``seconds`` at ``rate_nl_day`` (rounded up)."""
    return int(math.ceil(seconds * rate_nl_day * 1000.0 / 86_400.0 / step_pl))


class ProtocolRig(BenchRig):
    """A pump rig over the wire protocol; the clock is the host's (``time.monotonic``).

    ``client`` is an open :class:`pumprig.client.Client` with the clinician role; the rig owns
    it and closes it in :meth:`close`. ``poll_s``: how often a step move is checked.
    """

    def __init__(self, client, poll_s=0.5, move_timeout_factor=3.0):
        self.client = client
        self.poll_s = poll_s
        self.move_timeout_factor = move_timeout_factor
        self.run_s = None
        self._resume = False
        st = client.status()
        self.was_therapy = st.get("therapy")
        self._resume = self.was_therapy == "running"
        self.info = dict(client.info or {})

    # -- clock -----------------------------------------------------------------------------
    def now_s(self):
        return time.monotonic()

    def wait_until_s(self, t_s):
        while True:
            left = t_s - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 1.0))

    # -- delivery --------------------------------------------------------------------------
    def expect_run_s(self, seconds):
        """The next start_rate is expected to last ``seconds`` (bounds the motor.run)."""
        self.run_s = seconds

    def start_rate(self, rate_nl_day):
        c = self.client
        c.therapy_stop()
        if self.run_s is None:
            steps = MAX_MOTOR_RUN_STEPS
        else:
            # the run, plus 10 % and 10 min of slack for the host's last readings
            steps = _steps_for(rate_nl_day, self.get_step_pl(), self.run_s * 1.1 + 600) + 10
        steps = max(1, min(MAX_MOTOR_RUN_STEPS, steps))
        c.motor_run(steps, rate_nl_day=int(rate_nl_day))

    def stop(self):
        self.client.therapy_stop()

    def _moving(self):
        return self.client.status().get("mode") == "bench"

    def run_steps(self, steps):
        c = self.client
        c.therapy_stop()
        start = self.now_s()
        expected_s = steps / float(ASSUMED_MOVE_HZ)
        c.motor_run(int(steps))
        deadline = start + self.move_timeout_factor * expected_s + 30.0
        self.wait_until_s(start + expected_s)
        while self._moving():
            if self.now_s() > deadline:
                c.therapy_stop()
                raise BenchError("the rig did not finish %d steps in %.0f s (status mode still "
                                 "\"bench\"): stopped" % (steps, deadline - start))
            self.wait_until_s(self.now_s() + self.poll_s)

    def ready_for_bench(self):
        """Refuse a flow run on a rig in its safe state: its calibration or records failed
        their CRC (or it stopped for another critical reason), so its timing cannot be
        trusted. A calibration (``pumprig calibrate``) is allowed: it is the remedy."""
        st = self.client.status()
        if st.get("therapy") == "safe":
            raise BenchError("the rig is in its safe state (%s; alarms: %s): run `pumprig "
                             "calibrate` or program a plan first"
                             % (st.get("safe_reason") or "no reason given",
                                ", ".join(st.get("alarms") or []) or "none"))

    def describe(self):
        """The board's own account of itself, from its ``hello`` when the rig was opened."""
        info = self.info
        out = {k: info.get(k) for k in ("uid", "board", "firmware", "protocol", "plan_crc")}
        out["virtual"] = False
        return out

    # -- calibration -----------------------------------------------------------------------
    def get_step_pl(self):
        return int(self.client.calib_get()["step_pl"])

    def set_step_pl(self, step_pl):
        self.client.calib_set(int(step_pl))

    # -- session ---------------------------------------------------------------------------
    def close(self):
        """Resume therapy if it was running when the rig was opened; close the client."""
        try:
            if self._resume and self.client.ser is not None:
                self._resume = False
                try:
                    self.client.therapy_resume()
                except PumprigError:
                    pass  # e.g. the rig is now in its safe state: the user sees it in status
        finally:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VirtualBenchRig(ProtocolRig):
    """A virtual rig: the protocol commands as on a board, the world's clock, warp waiting.

    ``world`` is the rig's :class:`pumprig.virtual.control.WorldClient`;
    ``nominal_step_pl`` the mechanism's design step (the board config's), the reference of
    :meth:`set_true_step_pl` callers (default: what the world moves now). Warp mode is switched
    on for the session (and restored by :meth:`close`). ``on_close`` callables run last (the
    throwaway rig of ``--port sim`` stops there).
    """

    def __init__(self, client, world, balance_link=None, on_close=None, poll_s=0.5,
                 nominal_step_pl=None):
        self.world = world
        self.balance_link = balance_link
        self._on_close = list(on_close or [])
        st = world.status()
        self._warp_was = bool(st.get("warp"))
        # the mechanism's design step: what --pump-error is relative to
        self.nominal_step_pl = int(nominal_step_pl or st.get("true_step_pl") or 250_000)
        if not self._warp_was:
            world.set_warp(True)
        self._align_ms()
        super().__init__(client, poll_s=poll_s)

    def _align_ms(self):
        """Move the frozen clock to a whole millisecond (+1 ms).

        Works around a virtual-rig timing mismatch: the world starts a motor segment at its own
        microsecond time, while the firmware's sim layer (board/hw/sim.py) times the segment
        from its millisecond clock. After real-time running the world's time is off a whole ms,
        the firmware takes the segment for finished up to 1 ms before the world's last pulse,
        starts the next one, and the world aborts the last pulse of the first (one step lost).
        In warp time only moves to whole ms, so aligning once keeps it exact."""
        t_us = self.world.measure()["time_us"]
        self._quiesce()
        self.world.advance(to_ms=t_us // 1000 + 1, timeout_s=120.0)

    def now_s(self):
        return self.world.measure()["time_us"] / 1e6

    def _quiesce(self, limit_s=2.0):
        """Wait (real time, briefly) until the firmware is back in its wait, so an advance
        never arrives while it is still talking to the world after a protocol command.

        Works around a launcher race: when a control request that advances time and a board
        message land in the same select batch, the advance consumes the board message and the
        launcher then blocks reading the (blocking) board pipe: both processes hang."""
        end = time.monotonic() + limit_s
        while True:
            st = self.world.status()
            if st.get("waiting") or st.get("state") != "running" or time.monotonic() > end:
                return
            time.sleep(0.001)

    def wait_until_s(self, t_s):
        to_ms = int(math.ceil(t_s * 1000.0 - 1e-6))
        if to_ms * 1000 > self.world.measure()["time_us"]:
            self._quiesce()
            self.world.advance(to_ms=to_ms, timeout_s=120.0)

    def describe(self):
        out = super().describe()
        out["virtual"] = True
        return out

    def set_true_step_pl(self, true_step_pl):
        """What one step really moves in the virtual mechanism (a slow or fast pump)."""
        self.world.fault(true_step_pl=int(true_step_pl))

    def close(self):
        try:
            super().close()
        finally:
            try:
                if not self._warp_was:
                    self.world.set_warp(False)
            except PumprigError:
                pass
            finally:
                for fn in reversed(self._on_close):
                    fn()


# --------------------------------------------------------------------------------------------
# opening a rig from a port


def find_virtual(port, home=None):
    """The registry entry of the running virtual rig whose link is ``port``, or None."""
    from pumprig.ports import list_virtual

    want = os.path.realpath(port)
    for entry in list_virtual(home):
        link = entry.get("port")
        if link and (link == port or os.path.realpath(link) == want):
            return entry
    return None


def _connect(link, home, timeout=2.0):
    """A clinician client on a virtual rig: the connect-and-retry policy of the virtual rig
    (pumprig.virtual.link)."""
    from pumprig.virtual.link import connect

    return connect(link, home=home, timeout=timeout)


def start_sim(state_dir=None):
    """A throwaway virtual rig (warp) with the firmware installed and booted, and its virtual
    balance. Its keys go to a temporary ``PUMPRIG_HOME``; with ``state_dir`` the board files
    (calibration, records) and the keys are kept there instead, so the next ``start_sim`` with
    the same directory continues from them (the world, i.e. the mechanism, is new each time).

    Returns a :class:`VirtualBenchRig` that stops the rig on close (and removes its files
    unless ``state_dir``); its ``balance_link`` is the rig's virtual balance."""
    from pumprig.virtual.rig import open_rig

    if state_dir:
        state_dir = os.path.abspath(state_dir)
        home = os.path.join(state_dir, "home")
        rig_state = os.path.join(state_dir, "rig")
        os.makedirs(home, exist_ok=True)
        keep = True
    else:
        home = tempfile.mkdtemp(prefix="pumprig-bench-home-")
        rig_state = None
        keep = False
    blank = not (rig_state and os.path.exists(os.path.join(rig_state, "fs", "main.py")))
    rig = None
    try:
        # the firmware as a flash writes it; data/ (the records) is kept
        rig = open_rig(state=rig_state, blank=blank, warp=True, name="bench-%d" % os.getpid(),
                       home=home)
    except BaseException:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
        raise

    def cleanup():
        rig.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)

    try:
        nominal = int(rig.world.status()["true_step_pl"])  # a new world: the board config's
        client = rig.connect()
    except BaseException:
        cleanup()
        raise
    try:
        vr = VirtualBenchRig(client, rig.world, rig.balance_link, on_close=[cleanup],
                             nominal_step_pl=nominal)
    except BaseException:
        client.close()
        cleanup()
        raise
    vr.virtual_rig = rig
    return vr


def _config_step_pl(state_dir, board):
    """The nominal step of a registered virtual rig: its board config's ``step_pl``."""
    import json

    if not state_dir or not board:
        return None
    try:
        with open(os.path.join(state_dir, "fs", "boards", board + ".json")) as f:
            return int(json.load(f)["step_pl"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def open_bench_rig(port, timeout=2.0, home=None):
    """The BenchRig for ``port``: ``"sim"`` (a throwaway virtual rig), a registered running
    virtual rig, or a board. Raises PumprigError when there is no port or no answer."""
    from pumprig.client import Client

    if not port:
        raise PumprigError("no port: give --port PORT (a board, a running virtual rig, or "
                           "\"sim\" for a throwaway virtual rig)")
    if port == "sim":
        return start_sim()
    entry = find_virtual(port, home)
    if entry is not None:
        from pumprig.virtual.control import WorldClient

        if not entry.get("control"):
            raise PumprigError("the virtual rig at %s registered no control socket" % port)
        world = WorldClient(entry["control"])
        try:
            client = _connect(port, home, timeout)
        except BaseException:
            world.close()
            raise
        try:
            nominal = _config_step_pl(entry.get("state"), (client.info or {}).get("board"))
            return VirtualBenchRig(client, world, entry.get("balance"),
                                   on_close=[world.close], nominal_step_pl=nominal)
        except BaseException:
            client.close()
            world.close()
            raise
    client = Client(port, role="clinician", timeout=timeout, home=home)
    client.open()
    try:
        return ProtocolRig(client)
    except BaseException:
        client.close()
        raise


def open_rig(port, timeout=2.0, sim_state=None, pump_error=None, home=None):
    """Open the :class:`BenchRig` for ``port``: ``"sim"`` starts a throwaway virtual rig (its
    board files and keys kept in ``sim_state`` when given), a running virtual rig's link drives
    it in virtual time, anything else is a board over the protocol. ``pump_error`` (a fraction,
    virtual rigs only) makes the simulated mechanism move that much off the nominal step.
    The caller closes the rig."""
    if sim_state and port != "sim":
        raise PumprigError("--sim-state goes with --port sim")
    if port == "sim":
        rig = start_sim(state_dir=sim_state)
    else:
        rig = open_bench_rig(port, timeout=timeout, home=home)
    try:
        if pump_error is not None:
            if not isinstance(rig, VirtualBenchRig):
                raise PumprigError("--pump-error works on a virtual rig only (it sets the "
                                   "simulated mechanism); %s is a board" % port)
            rig.set_true_step_pl(int(round(rig.nominal_step_pl * (1.0 + pump_error))))
    except BaseException:
        rig.close()
        raise
    return rig
