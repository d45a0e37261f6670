"""Fixtures shared by the anunet_core.archives tests."""

from __future__ import annotations

import pytest
from archive_builders import build_archive

from anunet_core.archives import LAYOUTS


@pytest.fixture(scope="session")
def archives(tmp_path_factory):
    """``{layout: (root, {case_id: (patient_id, phantom)})}``: a small archive in every layout."""
    base = tmp_path_factory.mktemp("archives")
    return {layout: (base / layout, build_archive(layout, base / layout)) for layout in LAYOUTS}
