"""Canonical JSON and its CRC: the streamed forms give the same bytes as the whole ones."""

from binascii import crc32

from pumpcore import canon

VALUES = (
    None, 0, -5, "", "plain", 'quote " backslash \\ tab \t and \u00e9', [], {}, [1, [2, [3]]],
    {"b": 1, "a": [True, False, None], "c": {"z": "x", "y": -1}},
    {"overlays": [[i * 1000, i * 1000 + 600, 86_400_000 + i] for i in range(40)]},
)


def test_emit_pieces_join_to_dumps():
    for v in VALUES:
        pieces = []
        canon.emit(v, pieces.append)
        assert "".join(pieces) == canon.dumps(v), v


def test_digest_is_the_crc_of_the_whole_encoding():
    for v in VALUES:
        whole = "%08x" % (crc32(canon.dumps(v).encode()) & 0xFFFFFFFF)
        assert canon.digest(v) == whole, v
    # pinned: plan P1's CRC as the docs and the CLI tests show it
    p1 = {"v": 1, "drug": "baclofen", "conc_ng_ml": 2_000_000, "min_nl_day": 0,
          "catheter_nl": 0, "basal": {"kind": "continuous", "ng_day": 400_000},
          "start": None, "periodic": None, "patient": None,
          "reservoir": {"low_nl": 2_000_000, "empty_nl": 1_000_000, "on_empty": "stop",
                        "refill_by_days": 0},
          "caps": {"ng_24h": 1_000_000, "ng_1h": 1_000_000}}
    assert canon.digest(p1) == "e28a3d80"
