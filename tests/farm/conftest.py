"""The farm test needs labgrid, which lives in its own environment (.venv-farm, `make
test-farm`, docs/farm.md): .venv keeps stock pyserial. Where labgrid is not installed these
tests are not collected at all (not skipped): `make test` runs them through .venv-farm."""

import importlib.util

if importlib.util.find_spec("labgrid") is None:
    collect_ignore_glob = ["test_*.py"]
