"""A laboratory balance over MT-SICS (Mettler Toledo standard interface command set).

Only the level-0/1 commands a gravimetric bench needs:

=======  =====================================  =========================================
command  meaning                                replies handled
=======  =====================================  =========================================
``S``    stable weight                          ``S S <value> <unit>``; ``S I`` (no stable
                                                 value in time), ``S +`` / ``S -``
``SI``   weight now, stable or not              ``S S ...`` or ``S D ...`` (dynamic)
``Z``    zero                                   ``Z A``; ``Z I``, ``Z +``, ``Z -``
``T``    tare                                   ``T S <value> <unit>``; ``T I/+/-``
``TA``   tare value                             ``TA A <value> <unit>``
``I2``   model and capacity                     ``I2 A "<text>"``
``I4``   serial number                          ``I4 A "<text>"``
``@``    reset (clears tare)                    ``I4 A "<serial>"``
=======  =====================================  =========================================

Any command may also be answered by ``ES`` (syntax error: command not understood), ``ET``
(transmission error) or ``EL`` (logical error: cannot be executed now). Every failure raises
:class:`pumprig.errors.BalanceError` with a message a person can act on.

Weights are returned as integer micrograms: the decimal text is converted exactly (no float),
rounded half away from zero at the microgram.

The port is opened by URL through pyserial (``/dev/ttyUSB0``, ``socket://host:port``, a pty
path), 9600 8N1 by default as most balances ship; commands end with CR LF.
"""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import serial

from pumprig.errors import BalanceError

# micrograms per unit, as exact decimals
_UNIT_UG = {
    "kg": Decimal(1_000_000_000),
    "g": Decimal(1_000_000),
    "mg": Decimal(1000),
    "ug": Decimal(1),
    "\u00b5g": Decimal(1),  # micro sign
    "\u03bcg": Decimal(1),  # Greek mu
}

_ERRORS = {
    "ES": "the balance did not understand the command %r (syntax error ES)",
    "ET": "the balance reported a transmission error (ET) for %r: check baud rate and cabling",
    "EL": "the balance cannot execute %r now (logical error EL)",
}


def to_micrograms(value, unit):
    """``("12.34567", "g")`` -> 12345670. Raises BalanceError on an unknown unit or number."""
    factor = _UNIT_UG.get(unit)
    if factor is None:
        raise BalanceError("the balance reports weights in %r; set it to g or mg" % unit)
    try:
        d = Decimal(value)
    except InvalidOperation as e:
        raise BalanceError("the balance sent %r, not a number" % value) from e
    if not d.is_finite():
        raise BalanceError("the balance sent %r, not a number" % value)
    return int((d * factor).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _split_reply(text):
    """Split a reply line into tokens, keeping a quoted string as one token."""
    tokens = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c == '"':
            j = text.find('"', i + 1)
            if j < 0:
                j = n
            tokens.append(text[i + 1:j])
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in " \t":
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


class Balance:
    """An MT-SICS balance on ``url``. Use as a context manager or call :meth:`close`.

    ``timeout`` (s) bounds the wait for each reply; a stable weight (``S``) may take the
    balance a few seconds, so keep it above its stabilisation time. ``port`` may be given
    instead of a URL (an already open pyserial object, for tests and adapters).
    """

    def __init__(self, url=None, timeout=5.0, baudrate=9600, port=None):
        self.url = url
        self.timeout = timeout
        self.last_stable = None  # stability of the last weigh_now() reading
        if port is not None:
            self._port = port
            return
        if not url:
            raise BalanceError("no balance port given")
        try:
            self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            raise BalanceError("cannot open the balance at %s: %s" % (url, e)) from e

    # -- context manager -------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        port, self._port = self._port, None
        if port is not None:
            port.close()

    # -- transport -------------------------------------------------------------------------
    def command(self, cmd):
        """Send one command, return the reply split into tokens (errors already raised)."""
        if self._port is None:
            raise BalanceError("the balance connection is closed")
        try:
            self._port.reset_input_buffer()
            self._port.write(cmd.encode("ascii") + b"\r\n")
            self._port.flush()
            raw = self._port.readline()
        except (serial.SerialException, OSError) as e:
            raise BalanceError("lost the balance at %s: %s" % (self.url, e)) from e
        if not raw.endswith(b"\n"):
            if raw:
                raise BalanceError("incomplete answer %r from the balance to %r within %.1f s"
                                   % (raw, cmd, self.timeout))
            raise BalanceError("no answer from the balance to %r within %.1f s: is it on, "
                               "at the right baud rate, with MT-SICS selected?" % (cmd, self.timeout))
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            text = raw.decode("latin-1").strip()
        tokens = _split_reply(text)
        if not tokens:
            raise BalanceError("empty answer from the balance to %r" % cmd)
        if tokens[0] in _ERRORS and len(tokens) == 1:
            raise BalanceError(_ERRORS[tokens[0]] % cmd)
        return tokens

    def _expect(self, cmd, head):
        tokens = self.command(cmd)
        if tokens[0] != head or len(tokens) < 2:
            raise BalanceError("unexpected answer %r from the balance to %r"
                               % (" ".join(tokens), cmd))
        return tokens

    def _weight(self, cmd, allow_dynamic):
        tokens = self._expect(cmd, "S")
        status = tokens[1]
        if status == "I":
            raise BalanceError("the balance gave no stable weight (S I): draughts, vibration or "
                               "a vessel touching the enclosure?")
        if status == "+":
            raise BalanceError("balance overload (S +): the load is above its capacity")
        if status == "-":
            raise BalanceError("balance underload (S -): is the pan in place? zero it again")
        if status not in ("S", "D") or (status == "D" and not allow_dynamic):
            raise BalanceError("unexpected weight status %r from the balance to %r"
                               % (status, cmd))
        if len(tokens) < 4:
            raise BalanceError("weight answer %r has no value and unit" % " ".join(tokens))
        self.last_stable = status == "S"
        return to_micrograms(tokens[2], tokens[3])

    # -- weighing --------------------------------------------------------------------------
    def weigh_stable(self):
        """Stable net weight in micrograms (``S``)."""
        return self._weight("S", allow_dynamic=False)

    def weigh_now(self):
        """Net weight now in micrograms, stable or not (``SI``); ``last_stable`` tells which."""
        return self._weight("SI", allow_dynamic=True)

    def zero(self):
        """Zero the balance (``Z``); clears the tare."""
        tokens = self._expect("Z", "Z")
        status = tokens[1]
        if status == "A":
            return
        if status == "I":
            raise BalanceError("the balance could not zero (Z I): not stable or busy")
        if status in "+-":
            raise BalanceError("the balance could not zero (Z %s): load outside the zeroing range"
                               % status)
        raise BalanceError("unexpected answer %r to zero" % " ".join(tokens))

    def tare(self):
        """Tare the balance (``T``); returns the tare weight in micrograms."""
        tokens = self._expect("T", "T")
        status = tokens[1]
        if status == "S" and len(tokens) >= 4:
            return to_micrograms(tokens[2], tokens[3])
        if status == "I":
            raise BalanceError("the balance could not tare (T I): not stable or busy")
        if status == "+":
            raise BalanceError("the balance could not tare (T +): upper limit of taring range")
        if status == "-":
            raise BalanceError("the balance could not tare (T -): lower limit of taring range")
        raise BalanceError("unexpected answer %r to tare" % " ".join(tokens))

    def tare_value(self):
        """The current tare in micrograms (``TA``)."""
        tokens = self._expect("TA", "TA")
        if tokens[1] != "A" or len(tokens) < 4:
            raise BalanceError("unexpected answer %r to a tare query" % " ".join(tokens))
        return to_micrograms(tokens[2], tokens[3])

    def _text(self, cmd):
        tokens = self._expect(cmd, cmd)
        if tokens[1] != "A" or len(tokens) < 3:
            raise BalanceError("unexpected answer %r to %s" % (" ".join(tokens), cmd))
        return " ".join(tokens[2:])

    def model(self):
        """Model type and capacity text (``I2``), e.g. ``"XPR2U 2.1 g"``."""
        return self._text("I2")

    def serial_number(self):
        """Serial number (``I4``)."""
        return self._text("I4")

    def reset(self):
        """Reset the balance interface (``@``): cancels commands, clears the tare; returns the
        serial number it answers with."""
        tokens = self._expect("@", "I4")
        if tokens[1] != "A" or len(tokens) < 3:
            raise BalanceError("unexpected answer %r to a reset" % " ".join(tokens))
        return tokens[2]

    def identify(self):
        """``{"model": ..., "serial": ...}``."""
        return {"model": self.model(), "serial": self.serial_number()}
