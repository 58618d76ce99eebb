"""The host side of a virtual rig's serial link: one connect-and-retry policy.

The wake-up race: the launcher relays host bytes into the interpreter's pty and then wakes the
firmware from its wait; the pty may hand the bytes over a moment later, so the firmware can
look, find nothing and wait again, and in warp time nothing else wakes it. The firmware waits
briefly for them (hw/sim.py), and on a loaded machine that is not always enough. So a request
to a virtual rig that is not answered within NUDGE_S is followed by an empty line, which the
firmware ignores (docs/protocol.md) but which wakes it again; the request itself is not resent
early (a resend reuses its id anyway, so the firmware runs it at most once).

`connect()` opens a client on a rig that has just been powered on: it retries the hello until
the firmware answers (it boots in well under a second), and gives up with SimError.
"""

import time

from pumprig.client import Client
from pumprig.errors import AuthError, PumprigError, SimError


class VirtualClient(Client):
    """A Client for a virtual rig: nudges an unanswered request with an empty line."""

    NUDGE_S = 0.05

    def _wait_response(self, req_id, deadline):
        while True:
            f = super()._wait_response(req_id, min(deadline, time.monotonic() + self.NUDGE_S))
            if f is not None or time.monotonic() >= deadline:
                return f
            self._write(b"\n")


def connect(link, role="clinician", home=None, timeout=2.0, wait_s=10.0, cls=VirtualClient):
    """An open client (hello and login done) on the virtual rig at link, retrying while the
    firmware boots. A refused key (AuthError) is not retried."""
    end = time.monotonic() + wait_s
    last = None
    while True:
        c = cls(link, role=role, home=home, timeout=timeout)
        try:
            return c.open()
        except AuthError:
            raise
        except PumprigError as e:
            last = e
        if time.monotonic() > end:
            raise SimError("the firmware on the virtual rig at %s did not answer: %s"
                           % (link, last))
        time.sleep(0.02)
