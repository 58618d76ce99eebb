"""Fixtures shared by the host tests."""

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh PUMPRIG_HOME (keys, rig registry) and no default port."""
    d = tmp_path / "home"
    monkeypatch.setenv("PUMPRIG_HOME", str(d))
    monkeypatch.delenv("PUMPRIG_PORT", raising=False)
    return d
