"""The tissue classes a phantom is rendered from, with their CT and MR intensities.

:mod:`~anunet_core.synthetic.anatomy` paints a map of these classes (``Phantom.tissue``,
uint8 ``(I, J, K)``); :mod:`~anunet_core.synthetic.appearance` turns it into an image. Per
class the table holds the CT per-case mean range (HU), the nominal T1 and T2SPIR signal
(arbitrary units; jittered +-15 % per tissue and scaled by a per-case gain) and the sd of the
fine (8 mm) and coarse (20 mm) CT texture (HU).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TISSUES", "TISSUE_TABLE", "TEXTURE_MR", "Tissue"]


class Tissue(NamedTuple):
    """One tissue class: its name, CT and MR intensities and CT texture."""

    name: str
    ct_hu: tuple[int, int]  # per-case mean drawn uniformly in [low, high), HU
    t1: int  # nominal T1 signal, arbitrary units
    t2spir: int  # nominal T2SPIR (fat suppressed T2) signal, arbitrary units
    ct_texture: tuple[int, int]  # sd of the fine (8 mm) and coarse (20 mm) CT texture, HU


TISSUE_TABLE: tuple[Tissue, ...] = tuple(Tissue(*row) for row in (
    ("air", (-1000, -1000), 0, 0, (0, 0)),
    ("lung", (-880, -820), 15, 10, (25, 10)),
    ("fat", (-115, -85), 850, 90, (8, 4)),
    ("muscle", (40, 60), 330, 180, (8, 4)),
    ("liver", (100, 140), 480, 240, (6, 4)),
    ("liver_vessel", (150, 185), 120, 90, (0, 0)),  # CT: liver + 25..50 HU
    ("lesion", (40, 80), 280, 520, (8, 4)),  # CT: liver - 35..70 HU
    ("spleen", (110, 150), 390, 430, (6, 4)),  # MR: tied to the liver, see appearance
    ("renal_cortex", (160, 200), 450, 480, (8, 4)),
    ("renal_medulla", (135, 165), 350, 620, (8, 4)),  # CT: cortex - 0..30 HU
    ("renal_sinus", (-40, 0), 600, 300, (0, 0)),
    ("artery", (150, 220), 80, 60, (0, 0)),
    ("vein", (110, 160), 100, 80, (0, 0)),
    ("heart", (120, 160), 220, 200, (10, 5)),
    ("bile", (0, 20), 150, 1100, (0, 0)),
    ("bowel_gas", (-950, -850), 10, 10, (0, 0)),
    ("bowel_fluid", (0, 25), 220, 800, (10, 30)),
    ("bowel_wall", (70, 140), 460, 270, (15, 30)),  # enhancing (jejunal) wall
    ("bowel_contrast", (180, 320), 300, 500, (30, 60)),
    ("stomach_fluid", (5, 35), 300, 700, (12, 25)),
    ("cancellous_bone", (330, 450), 560, 180, (40, 20)),
    ("cortical_bone", (750, 1000), 40, 30, (0, 0)),
    ("disc", (70, 100), 250, 450, (0, 0)),
    ("csf", (5, 25), 120, 1100, (0, 0)),
    ("rib", (450, 700), 300, 100, (0, 0)),
    ("pancreas", (90, 130), 500, 280, (10, 5)),
))
"""Tissue class (its index) -> :class:`Tissue`."""

(
    T_AIR, T_LUNG, T_FAT, T_MUSCLE, T_LIVER, T_LIVER_VESSEL, T_LESION, T_SPLEEN, T_CORTEX,
    T_MEDULLA, T_SINUS, T_ARTERY, T_VEIN, T_HEART, T_BILE, T_BOWEL_GAS, T_BOWEL_FLUID,
    T_BOWEL_WALL, T_BOWEL_CONTRAST, T_STOMACH_FLUID, T_CANCELLOUS, T_CORTICAL, T_DISC, T_CSF,
    T_RIB, T_PANCREAS,
) = range(len(TISSUE_TABLE))

TISSUES: dict[int, str] = {t: row.name for t, row in enumerate(TISSUE_TABLE)}
"""Tissue class (values of ``Phantom.tissue``) -> name."""

TEXTURE_MR: dict[int, tuple[float, float]] = {
    T_BOWEL_WALL: (0.08, 0.3),
    T_BOWEL_FLUID: (0.08, 0.3),
    T_BOWEL_CONTRAST: (0.08, 0.3),
    T_STOMACH_FLUID: (0.08, 0.25),
}
"""MR texture (fine, coarse) as a fraction of the signal where it differs from (0.04, 0.02):
bowel content varies a lot."""
