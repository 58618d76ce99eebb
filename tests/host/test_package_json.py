"""board/package.json (for `mpremote mip install`) lists exactly the firmware's files."""

import json
import os

BOARD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "board")


def test_package_json_lists_every_firmware_file():
    with open(os.path.join(BOARD, "package.json")) as f:
        pkg = json.load(f)
    listed = {dest for dest, _src in pkg["urls"]}
    actual = set()
    for root, _dirs, files in os.walk(BOARD):
        if "__pycache__" in root:
            continue
        for name in files:
            if name.endswith((".py", ".json")) and name != "package.json":
                actual.add(os.path.relpath(os.path.join(root, name), BOARD))
    assert listed == actual, (sorted(actual - listed), sorted(listed - actual))
    for _dest, src in pkg["urls"]:
        assert os.path.exists(os.path.join(BOARD, src)), src
    assert pkg["version"]
