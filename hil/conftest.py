"""The HIL suites run through the pumprig_hil plugin (hil/pumprig_hil/plugin.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

pytest_plugins = ["pumprig_hil.plugin"]


def pytest_configure(config):
    # the conformance suite (hil/test_hil_protocol.py): `pytest hil --rig PORT -m protocol`
    config.addinivalue_line("markers", "protocol: the protocol conformance suite (issue 13)")
