"""Registered-model names: the DESIGN contract ``anunet-{organ}-{modality}-L{depth}`` and family names."""

from __future__ import annotations

import pytest

from anunet_platform import registry
from anunet_platform.registry import RegistryError


def test_registered_model_name_is_the_design_contract() -> None:
    assert registry.registered_model_name("liver", "CT", 3) == "anunet-liver-ct-L3"
    assert registry.registered_model_name("Kidney", "mr", 1) == "anunet-kidney-mr-L1"
    for organ, modality, depth in [("liver", "PET", 1), ("liver", "CT", 5), ("liver", "CT", 0), ("li ver", "CT", 1),
                                   ("liver", "CT", True), ("liver", "CT", 2.0)]:
        with pytest.raises(RegistryError):
            registry.registered_model_name(organ, modality, depth)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("anunet-liver-ct", ("liver", "CT", None)),
        ("anunet-kidney-mr-L2", ("kidney", "MR", 2)),
        (" anunet-spleen-ct-L4 ", ("spleen", "CT", 4)),
    ],
)
def test_parse_model_family(name: str, expected: tuple) -> None:
    assert registry.parse_model_family(name) == expected


@pytest.mark.parametrize("name", ["anunet-liver-pet", "anunet-liver-ct-L5", "anunet-liver-ct-L0", "unet-liver-ct", "anunet-liver"])
def test_parse_model_family_refuses_other_names(name: str) -> None:
    with pytest.raises(RegistryError, match="family name like 'anunet-liver-ct'"):
        registry.parse_model_family(name)


def test_a_parsed_name_is_registered_under_the_same_name() -> None:
    for d in registry.DEPTHS:
        name = registry.registered_model_name("liver", "CT", d)
        organ, modality, depth = registry.parse_model_family(name)
        assert registry.registered_model_name(organ, modality, depth) == name
