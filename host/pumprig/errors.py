"""The host layer's one error family. The CLI prints these as `pumprig: message`, exit 1."""


class PumprigError(Exception):
    """A user-facing failure: the message says what is wrong and what to do."""


class PortError(PumprigError):
    """No such port, port busy, or the link dropped."""


class RigTimeout(PumprigError):
    """The rig did not answer in time."""


class ProtocolError(PumprigError):
    """The rig answered with something that is not a valid frame, or the wrong firmware."""


class AuthError(PumprigError):
    """No key for this rig, a wrong key, or a role that may not do this."""


class DeviceError(PumprigError):
    """The rig refused a request; `code` is the protocol error code."""

    def __init__(self, code, message):
        super().__init__("%s (%s)" % (message, code))
        self.code = code
        self.detail = message


class PlanFileError(PumprigError):
    """A plan file that cannot be read or does not follow the rules."""


class SimError(PumprigError):
    """The virtual rig could not be started or controlled."""


class BalanceError(PumprigError):
    """The balance did not answer, or answered out of range."""


class FarmError(PumprigError):
    """The farm (labgrid, its coordinator, a place, a rig's service) refused or is not there."""
