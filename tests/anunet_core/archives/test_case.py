"""Tests of anunet_core.archives.case: the Case record."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from anunet_core.archives import LAYOUTS, ArchiveError, Case, discover_cases


def test_case_record_round_trip(archives):
    for layout in LAYOUTS:
        root, _ = archives[layout]
        for case in discover_cases(root):
            assert Case.from_dict(case.to_dict()) == case
            assert pickle.loads(pickle.dumps(case)) == case
    with pytest.raises(ArchiveError, match="layout"):
        Case("x", "x", "nifti", Path("x.nii.gz"))

