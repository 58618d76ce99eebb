"""Months of therapy in seconds: the real firmware on a virtual rig, with the clock warped.

The package by concern:

- `oracle`: the plan's ideal delivery (written apart from the firmware) and the step error;
- `scenario`: faults and bolus request files, read into plain data;
- `run`: one run on a virtual rig (`simulate`, `RunOptions`), the report dict;
- `report`: the summary lines and the plot;
- `command`: `pumprig simulate`;

Over the run it checks, at every pulse, how far the measured cumulative steps are from the
ideal cumulative volume divided by the step size: `max_step_error`.
"""

from ..firmware import board_dir  # the one firmware lookup (pumprig.firmware)
from .command import add_parser, cmd_simulate, fill_for_run, start_epoch
from .oracle import LATE_MAX_MS, Oracle, PeriodicIdeal, StepError
from .report import check_plot_path, format_summary, plot
from .run import RunOptions, connect, open_rig, run, simulate
from .scenario import load_bolus_file, parse_fault

_start_epoch = start_epoch  # the older name (demo, bench scripts)

__all__ = [
    "LATE_MAX_MS", "Oracle", "PeriodicIdeal", "RunOptions",
    "StepError", "add_parser", "board_dir", "check_plot_path", "cmd_simulate",
    "connect", "fill_for_run", "format_summary", "load_bolus_file", "open_rig",
    "parse_fault", "plot", "run", "simulate", "start_epoch",
]
