"""Gravimetric bench tests: ``pumprig bench`` and ``pumprig calibrate``.

By concern:

- :mod:`pumprig.bench.rig`: the bench's interface to a pump rig (``BenchRig``) and its
  implementations over the protocol, on a board or a virtual rig.
- :mod:`pumprig.bench.procedures`: calibration, flow run, bolus series (rig and balance in,
  plain results out).
- :mod:`pumprig.bench.report`: what a lab files: CSV, JSON, plots and HTML.
- :mod:`pumprig.bench.command`: the command line (``add_parser``, ``run``).

The analysis (start-up and trumpet curves) is :mod:`pumprig.trumpet`; the balance
:mod:`pumprig.balance`.
"""

from pumprig.bench.command import add_parser

__all__ = ["add_parser"]
