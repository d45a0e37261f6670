"""Fixtures shared by the anunet_platform.tune tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import ingest_synthetic_ct

from anunet_platform.tune import SearchConfig


@pytest.fixture
def search():
    """``search(**changes)``: a valid SearchConfig (8 samples, 2 epochs) with ``changes``."""

    def make(**kwargs) -> SearchConfig:
        return SearchConfig(**({"data": Path("d"), "num_samples": 8, "epochs": 2} | kwargs))

    return make


@pytest.fixture(scope="package")
def small_dataset(tmp_path_factory) -> Path:
    """One small dataset, ingested once for every tuning test that runs trials: 5 synthetic CT
    cases at 64 px (at 32 px every trial's deepest head scores the same after one epoch, and the
    tests could no longer tell trials apart by Dice). Trials only read it."""
    return ingest_synthetic_ct(tmp_path_factory.mktemp("tune-data"), cases=5, shape=(64, 64, 12), size=64)
