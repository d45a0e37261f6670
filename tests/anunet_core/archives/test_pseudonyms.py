"""Tests of pseudonymous case ids (anunet_core.archives.pseudonyms)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anunet_core.archives import ArchiveError, pseudonym, pseudonym_key, pseudonymize_inventory, redact, take_inventory
from anunet_core.synthetic import make_archive

KEY = b"a-test-key-of-32-characters-long"


def test_the_key_comes_from_the_environment_and_must_be_long() -> None:
    assert pseudonym_key({"ANUNET_PSEUDONYM_KEY": KEY.decode()}) == KEY
    for env in ({}, {"ANUNET_PSEUDONYM_KEY": "short"}):
        with pytest.raises(ArchiveError, match=r"--pseudonymize needs a secret key .* \$ANUNET_PSEUDONYM_KEY"):
            pseudonym_key(env)


def test_pseudonyms_are_keyed_stable_and_opaque() -> None:
    a = pseudonym("DOE^JANE", KEY)
    assert a == pseudonym("DOE^JANE", KEY) and len(a) == len("anon-") + 16 and a.startswith("anon-")
    assert a != pseudonym("DOE^JANE", b"another-key-of-32-characters-xxx"), "another key, other ids"
    assert a != pseudonym("DOE^JOHN", KEY)
    assert pseudonym(os.fsdecode(b"M\xfcller"), KEY).isascii()


def test_an_inventory_pseudonymised_has_no_name_left(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "pacs"
    make_archive(root, cases=2, modality="CT", fmt="nifti", seed=0, shape=(16, 16, 4), layout="pairs")
    (root / "case_0000").rename(root / "DOE^JANE")
    (root / "DOE^JANE" / "notes.txt").write_text("x")
    inventory = take_inventory(root)
    monkeypatch.setenv("ANUNET_PSEUDONYM_KEY", KEY.decode())
    id_map = tmp_path / "ids.json"
    anonymous = pseudonymize_inventory(inventory, id_map)
    assert [c.image for c in sorted(anonymous.cases, key=lambda c: c.image)] == [c.image for c in inventory.cases]
    for case in anonymous.cases:
        assert case.case_id.startswith("anon-") and case.patient_id.startswith("anon-")
        assert anonymous.source(case.image) == case.case_id
        assert anonymous.case_files[case.case_id] == 2
    (ignored,) = anonymous.ignored
    assert anonymous.source(ignored.path).startswith("anon-") and "DOE" not in anonymous.source(ignored.path)
    text = id_map.read_text()
    assert "DOE^JANE/image.nii.gz" in text and "DOE^JANE/notes.txt" in text and oct(id_map.stat().st_mode)[-3:] == "600"
    case = next(c for c in anonymous.cases if "DOE" in str(c.image))
    assert redact(f"{case.image}: cannot read NIfTI", case) == f"{case.case_id}: cannot read NIfTI"
    assert redact(f"{case.label} does not match", case) == f"{case.case_id}/label does not match"
