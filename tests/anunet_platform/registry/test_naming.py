"""Registered-model names: the DESIGN contract ``anunet-{organ}-{modality}-L{depth}``, the baselines' ``{arch}-{organ}-{modality}[-L{depth}]`` and family names."""

from __future__ import annotations

import pytest

from anunet_core.vocabulary import ARCHS, NESTED_ARCHS
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
        ("anunet-liver-ct", ("liver", "CT", None, "anunet")),
        ("anunet-kidney-mr-L2", ("kidney", "MR", 2, "anunet")),
        (" anunet-spleen-ct-L4 ", ("spleen", "CT", 4, "anunet")),
        ("unetpp-liver-ct", ("liver", "CT", None, "unetpp")),
        ("unetpp-liver-ct-L1", ("liver", "CT", 1, "unetpp")),
        ("unet-liver-ct", ("liver", "CT", 4, "unet")),
        ("attr2unet-kidney-mr", ("kidney", "MR", 4, "attr2unet")),
    ],
)
def test_parse_model_family(name: str, expected: tuple) -> None:
    parsed = registry.parse_model_family(name)
    assert parsed == expected
    assert (parsed.organ, parsed.modality, parsed.depth, parsed.arch) == expected


@pytest.mark.parametrize("name", ["anunet-liver-pet", "anunet-liver-ct-L5", "anunet-liver-ct-L0", "vnet-liver-ct",
                                  "anunet-liver", "unet-liver-ct-L4", "attunet-liver-ct-L2", "liver-ct", ""])
def test_parse_model_family_refuses_other_names(name: str) -> None:
    with pytest.raises(RegistryError, match="family name like 'anunet-liver-ct'"):
        registry.parse_model_family(name)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_registered_name_parses_back_to_its_family(arch: str) -> None:
    depths = registry.family_depths(arch)
    assert depths == (registry.DEPTHS if arch in NESTED_ARCHS else (4,))
    names = [registry.registered_model_name("liver", "CT", d, arch) for d in depths]
    assert len(set(names)) == len(depths)
    for d, name in zip(depths, names):
        assert name.startswith(f"{arch}-liver-ct")
        assert name.endswith(f"-L{d}") == (arch in NESTED_ARCHS)
        parsed = registry.parse_registered_name(name)
        assert parsed == ("liver", "CT", d, arch)
        assert registry.registered_model_name(parsed.organ, parsed.modality, parsed.depth, parsed.arch) == name
    assert registry.family_name("liver", "CT", arch) == f"{arch}-liver-ct"
    # a nested family's name is not one registered model; a one-output network's is
    assert (registry.parse_registered_name(f"{arch}-liver-ct") is None) == (arch in NESTED_ARCHS)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in NESTED_ARCHS])
def test_a_network_with_one_output_has_only_depth_4(arch: str) -> None:
    for depth in (1, 2, 3):
        with pytest.raises(RegistryError, match="one output"):
            registry.registered_model_name("liver", "CT", depth, arch)


def test_an_unknown_arch_is_refused() -> None:
    with pytest.raises(RegistryError, match="arch must be one of"):
        registry.registered_model_name("liver", "CT", 4, "vnet")
