"""Keys (issue 12, finding 9): the virtual rig's copy of keys.json is 0600, and a host key store
that cannot be read or parsed is never overwritten.

Before: the board copy was written 0644, and starting a rig when the store could not be parsed
replaced it with `{}` plus the new rig (every other board's keys lost); a store that could not
be read raised a traceback; non-UTF-8 bytes in it gave a traceback from the client.
"""

import json
import os
import stat

import pytest
from pumprig import cli
from pumprig.errors import AuthError
from pumprig.keys import KeyStore
from pumprig.virtual import supervisor

OTHER = {"0011223344556677": {"patient": "ab" * 32, "clinician": "cd" * 32}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("PUMPRIG_HOME", str(h))
    return h


def test_a_new_rig_gets_a_private_board_copy_and_other_keys_are_kept(home, tmp_path):
    (home / "keys.json").write_text(json.dumps(OTHER))
    state = tmp_path / "state"
    uid = supervisor.prepare_state(str(state), blank=True)
    board = state / "fs" / "data" / "keys.json"
    assert stat.S_IMODE(os.stat(board).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "keys.json").st_mode) == 0o600
    store = json.loads((home / "keys.json").read_text())
    assert store["0011223344556677"] == OTHER["0011223344556677"]
    assert store[uid] == json.loads(board.read_text())


def test_an_older_rigs_board_copy_is_made_private_at_start(home, tmp_path):
    state = tmp_path / "state"
    supervisor.prepare_state(str(state), blank=True)
    board = state / "fs" / "data" / "keys.json"
    os.chmod(board, 0o644)
    supervisor.prepare_state(str(state), blank=False)
    assert stat.S_IMODE(os.stat(board).st_mode) == 0o600


@pytest.mark.parametrize("content", [b"{not json", b'{"a": 1}\xff\xfe', b"[1, 2]", b"\x00" * 9])
def test_an_unparseable_store_is_never_overwritten(home, tmp_path, content):
    (home / "keys.json").write_bytes(content)
    state = tmp_path / "state"
    with pytest.raises(AuthError) as e:
        supervisor.prepare_state(str(state), blank=True)
    assert str(home / "keys.json") in str(e.value)
    assert (home / "keys.json").read_bytes() == content
    assert not (state / "fs" / "data" / "keys.json").exists()  # retried once it is repaired
    with pytest.raises(AuthError):
        KeyStore().save("aa" * 8, {"patient": "ab" * 32})
    assert (home / "keys.json").read_bytes() == content


def test_an_unreadable_store_stops_with_an_error_naming_it(home, tmp_path):
    (home / "keys.json").mkdir()            # read fails (as root, mode bits would not)
    with pytest.raises(AuthError, match="cannot read the key store .*keys.json"):
        supervisor.prepare_state(str(tmp_path / "state"), blank=True)
    with pytest.raises(AuthError, match="cannot read the key store"):
        KeyStore().key("aa" * 8, "patient")
    assert (home / "keys.json").is_dir()


def test_pumprig_sim_with_a_broken_store_is_one_pumprig_line(home, tmp_path, capsys):
    (home / "keys.json").write_bytes(b"\xff garbage")
    rc = cli.main(["sim", "--link", str(tmp_path / "rig"), "--state", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("pumprig: the key store %s" % (home / "keys.json")), err
    assert (home / "keys.json").read_bytes() == b"\xff garbage"
    assert not os.path.lexists(tmp_path / "rig")
