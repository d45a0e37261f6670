"""The project's one vocabulary: organs, modalities, depths and label tables, with their checks.

Every module that names an organ, a modality or a depth, or maps label values to organs,
imports it from here, so a new organ or label convention is added in exactly one place.

Organs and label values
    The paper segments three organs. Label files use TotalSegmentator's CT "total" class map
    (:data:`TOTALSEG_LABELS`), and an organ is a set of label values
    (:data:`ORGAN_LABEL_VALUES`): the paper's kidney is both kidneys. Public challenge
    archives use their own tables, mapped here as well: LiTS (:data:`LITS_LABELS`), the
    Medical Segmentation Decathlon (:data:`MSD_LABELS`) and CHAOS, whose ground truth is
    8-bit PNG grey values (:data:`CHAOS_GREY`).

Depths
    ANU-Net has four nested heads X0,1..X0,4; ``depth`` d = 1..4 is the pruned network whose
    output is X0,d (:data:`DEPTHS`).

Architectures
    ANU-Net and the five networks the paper compares it with (:data:`ARCHS`); the nested ones
    have depths like ANU-Net (:data:`NESTED_ARCHS`). The networks themselves are in
    :mod:`anunet_core.baselines`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "CHAOS_GREY",
    "CHAOS_GREY_RANGES",
    "DEPTHS",
    "LITS_LABELS",
    "MAX_DEPTH",
    "MODALITIES",
    "MSD_LABELS",
    "NESTED_ARCHS",
    "ORGANS",
    "ORGAN_LABEL_VALUES",
    "ORGAN_MAP_VALUES",
    "ORGAN_SNOMED",
    "TOTALSEG_LABELS",
    "is_depth",
    "validate_arch",
    "validate_depth",
    "validate_modality",
    "validate_organ",
]

ORGANS: tuple[str, ...] = ("liver", "spleen", "kidney")
"""The organs the paper segments (kidney = left + right)."""

MODALITIES: tuple[str, ...] = ("CT", "MR")
"""Scan modalities, spelled as DICOM's Modality tag."""

MAX_DEPTH = 4
DEPTHS: tuple[int, ...] = tuple(range(1, MAX_DEPTH + 1))
"""ANU-Net's pruning depths: depth d outputs the nested head X0,d."""

ARCHS: tuple[str, ...] = ("anunet", "unet", "r2unet", "unetpp", "attunet", "attr2unet")
"""ANU-Net and the paper's five baselines (Tables 2-5): U-Net, R2U-Net, UNet++, Attention U-Net
and Attention R2U-Net, spelled as ``--arch`` and the registered model names spell them."""

ARCH_NAMES: Mapping[str, str] = MappingProxyType({
    "anunet": "ANU-Net",
    "unet": "U-Net",
    "r2unet": "R2U-Net",
    "unetpp": "UNet++",
    "attunet": "Attention U-Net",
    "attr2unet": "Attention R2U-Net",
})
"""Each architecture as the paper's tables name it."""

NESTED_ARCHS: tuple[str, ...] = ("anunet", "unetpp")
"""The architectures with nested deep-supervision heads: they have :data:`DEPTHS` and prune."""

TOTALSEG_LABELS: Mapping[str, int] = MappingProxyType(
    {
        "spleen": 1,
        "kidney_right": 2,
        "kidney_left": 3,
        "gallbladder": 4,
        "liver": 5,
        "stomach": 6,
        "pancreas": 7,
        "lung_lower_lobe_left": 11,
        "lung_lower_lobe_right": 14,
        **{
            f"vertebrae_{level}": 26 + n
            for n, level in enumerate(["S1", "L5", "L4", "L3", "L2", "L1", *(f"T{t}" for t in range(12, 0, -1))])
        },
        "heart": 51,
        "aorta": 52,
        "inferior_vena_cava": 63,
    }
)
"""Structure name -> label value in TotalSegmentator's CT "total" class map (the structures our
phantoms draw; 0 is background)."""

ORGAN_LABEL_VALUES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {
        "liver": (TOTALSEG_LABELS["liver"],),
        "spleen": (TOTALSEG_LABELS["spleen"],),
        "kidney": (TOTALSEG_LABELS["kidney_right"], TOTALSEG_LABELS["kidney_left"]),
    }
)
"""The paper's organs -> the TotalSegmentator label values that make up each."""

ORGAN_MAP_VALUES: Mapping[str, int] = MappingProxyType({organ: n for n, organ in enumerate(ORGANS, start=1)})
"""The value of each organ in a segmentation label map the segment job writes (liver 1,
spleen 2, kidney 3; 0 is background), whichever organs a run segments: label maps of
different runs compare value for value."""

ORGAN_SNOMED: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "liver": ("10200004", "SCT", "Liver"),
        "spleen": ("78961009", "SCT", "Spleen"),
        "kidney": ("64033007", "SCT", "Kidney"),
    }
)
"""Each organ's SNOMED CT concept ``(code value, coding scheme, meaning)``: the segmented
property type of its DICOM SEG segment (category: ``123037004`` SCT "Anatomical Structure")."""

LITS_LABELS: Mapping[str, int] = MappingProxyType({"liver": 1, "liver_tumor": 2})
"""LiTS segmentation values (the tumour lies inside the liver; no other organ is labelled)."""

MSD_LABELS: Mapping[str, int] = MappingProxyType({"organ": 1, "tumor": 2})
"""Medical Segmentation Decathlon values: the task's organ and a tumour inside it."""

CHAOS_GREY: tuple[tuple[int, int, int, int], ...] = (
    (TOTALSEG_LABELS["liver"], 63, 55, 70),
    (TOTALSEG_LABELS["kidney_right"], 126, 110, 135),
    (TOTALSEG_LABELS["kidney_left"], 189, 175, 200),
    (TOTALSEG_LABELS["spleen"], 252, 240, 255),
)
"""CHAOS ground-truth PNGs: ``(TotalSegmentator label, grey value written, lowest grey read,
highest grey read)`` per structure (the CHAOS README's ranges, inclusive)."""

CHAOS_GREY_RANGES: tuple[tuple[int, int, int], ...] = tuple((low, high, label) for label, _, low, high in CHAOS_GREY)
"""``(lowest grey, highest grey, label value)``: how a CHAOS PNG is decoded."""


def validate_organ(organ: str) -> str:
    """Lower-cased organ name, checked against :data:`ORGANS` (``ValueError`` otherwise)."""
    name = str(organ).strip().lower()
    if name not in ORGANS:
        raise ValueError(f"organ must be one of {ORGANS}, got {organ!r}")
    return name


def validate_modality(modality: str) -> str:
    """Upper-cased modality, checked against :data:`MODALITIES` (``ValueError`` otherwise)."""
    name = str(modality).strip().upper()
    if name not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return name


def validate_arch(arch: str) -> str:
    """Lower-cased architecture name, checked against :data:`ARCHS` (``ValueError`` otherwise)."""
    name = str(arch).strip().lower()
    if name not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    return name


def is_depth(depth: object) -> bool:
    """True for an ``int`` (not a bool) in :data:`DEPTHS`."""
    return isinstance(depth, int) and not isinstance(depth, bool) and depth in DEPTHS


def validate_depth(depth: object, what: str = "depth") -> int:
    """``depth`` itself when it is an ``int`` (not a bool) in :data:`DEPTHS`, else ``ValueError``
    naming ``what`` (``2.0`` and ``"2"`` are refused: a depth is never a float or a string)."""
    if not is_depth(depth):
        raise ValueError(f"{what} must be one of 1..{MAX_DEPTH}, got {depth!r}")
    return depth  # type: ignore[return-value]
