"""Tests of anunet_core.synthetic.files, and of the folder writes the archive writers rely on."""

from __future__ import annotations

import pytest

from anunet_core.io import write_folder_atomic
from anunet_core.synthetic.files import write_bytes_atomic


def test_atomic_dir_replaces_the_folder_as_a_whole(tmp_path):
    target = tmp_path / "series"
    write_bytes_atomic(target / "old.dcm", b"old")
    with write_folder_atomic(target) as tmp:
        (tmp / "new.dcm").write_bytes(b"new")
        assert (target / "old.dcm").exists()  # readers see the old folder until the end
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["new.dcm", "series"]


def test_atomic_dir_leaves_the_old_folder_on_failure(tmp_path):
    target = tmp_path / "series"
    write_bytes_atomic(target / "old.dcm", b"old")
    with pytest.raises(RuntimeError):
        with write_folder_atomic(target) as tmp:
            (tmp / "half.dcm").write_bytes(b"half")
            raise RuntimeError("killed")
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["old.dcm", "series"]
