"""Tests of anunet_core.archives.names: filesystem-safe, unique, stable case ids."""

from __future__ import annotations

import shutil

from archive_builders import SAFE_ID

from anunet_core.archives import discover_cases


def test_colliding_ids_are_made_unique(archives, tmp_path):
    root, _ = archives["pairs"]
    for name in ("Case A", "Case_A", "case_a"):
        shutil.copytree(root / "case_0003", tmp_path / name)
    cases = discover_cases(tmp_path)
    ids = [c.case_id for c in cases]
    assert len({i.lower() for i in ids}) == 3
    assert all(SAFE_ID.match(i) for i in ids)
    assert all(c.patient_id == c.case_id for c in cases)
    assert discover_cases(tmp_path) == cases  # deterministic

