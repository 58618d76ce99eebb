"""The HIL suites run through the pumprig_hil plugin (hil/pumprig_hil/plugin.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

pytest_plugins = ["pumprig_hil.plugin"]
