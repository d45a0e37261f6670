"""Fixtures shared by the anunet_platform.tune tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from anunet_platform.tune import SearchConfig


@pytest.fixture
def search():
    """``search(**changes)``: a valid SearchConfig (8 samples, 2 epochs) with ``changes``."""

    def make(**kwargs) -> SearchConfig:
        return SearchConfig(**({"data": Path("d"), "num_samples": 8, "epochs": 2} | kwargs))

    return make
