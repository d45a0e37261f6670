"""Post-processing of one organ's predicted 3-D mask: keep its largest connected component(s).

The rule (nnU-Net's "keep the largest foreground component", one rule per organ,
:data:`ORGAN_RULES`):

1. Label the mask's 3-D connected components, 26-connectivity (voxels that share a face, an
   edge or only a corner are connected).
2. Keep the ``keep_components`` largest (liver 1, spleen 1, kidney 2: the paper's kidney is
   both kidneys in one mask). Ties between components of equal size go to the one whose first
   voxel comes first in C order (the lowest flat index), so the result is deterministic.
3. Of those, drop any smaller than ``min_blob_ml`` mL: when an organ is missing (a
   nephrectomy, a scan that does not reach the spleen), the rule must not keep a false
   positive speck in its place.

Everything else is set to 0. The volume of a component is its voxel count x the volume of one
voxel (mL); a component of exactly ``min_blob_ml`` is kept.

Implementation: the labelling is ``cc3d.connected_components`` (package
``connected-components-3d``), which numbers the components of a C-contiguous array in the order
of their first voxel in C order, as ``scipy.ndimage.label`` does. It labels a 512 x 512 x 200
mask about 7x faster than ``scipy.ndimage.label`` (0.09 s against 0.64 s, one core of an AMD
EPYC). The component sizes are counted over the foreground voxels only, so the rest of the
pass costs little: the whole pass takes 0.15 s against 0.76 s with scipy for a liver and 300
false positive specks (0.2 s on 512 x 512 x 300), where ``cc3d.largest_k`` + ``cc3d.dust``
(two labellings) take 1.9 s (``benchmarks/bench_postprocess.py``). The tests check the result
against a plain ``scipy.ndimage.label`` reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import cc3d
import numpy as np

from anunet_core.vocabulary import validate_organ

__all__ = [
    "CONNECTIVITY",
    "ORGAN_RULES",
    "PostprocessResult",
    "PostprocessRule",
    "foreground",
    "kept_components",
    "postprocess_organ",
    "rule_for",
]

CONNECTIVITY = 26
"""3-D neighbourhood of the components: faces, edges and corners."""


def _is_real(value: object) -> bool:
    """True for an int or float (Python or NumPy), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class PostprocessRule:
    """How one organ's mask is cleaned.

    Attributes:
        keep_components: how many of the largest 3-D components (26-connectivity) are kept
            (an int >= 1).
        min_blob_ml: kept components smaller than this (mL, finite, >= 0) are removed too.
    """

    keep_components: int
    min_blob_ml: float

    def __post_init__(self) -> None:
        k = self.keep_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"keep_components must be an integer >= 1, got {k!r}")
        m = self.min_blob_ml
        if not (_is_real(m) and math.isfinite(m) and m >= 0):
            raise ValueError(f"min_blob_ml must be a finite number of mL >= 0, got {m!r}")
        object.__setattr__(self, "keep_components", int(k))
        object.__setattr__(self, "min_blob_ml", float(m))


ORGAN_RULES: Mapping[str, PostprocessRule] = MappingProxyType(
    {
        # One liver. 10 mL is far below any whole liver (a newborn's is about 120 mL, an
        # adult's 1,200-1,800 mL): what is removed is noise, or a sliver of the liver dome at
        # the edge of a chest scan, whose volume would be meaningless anyway.
        "liver": PostprocessRule(keep_components=1, min_blob_ml=10.0),
        # One spleen (accessory spleens, usually about 1 cm, 0.5 mL, are dropped: they are
        # not "the spleen"). 5 mL is below a newborn's spleen (about 10 mL) and a small
        # atrophic adult one, and above the false positive specks a model leaves.
        "spleen": PostprocessRule(keep_components=1, min_blob_ml=5.0),
        # Two kidneys in one mask. 5 mL per kidney is below a newborn's kidney (about 10 mL)
        # and most end-stage atrophic kidneys (20-60 mL); after a nephrectomy the second
        # "kidney" would otherwise be the largest false positive speck.
        "kidney": PostprocessRule(keep_components=2, min_blob_ml=5.0),
    }
)
"""The rule of each organ of :data:`anunet_core.vocabulary.ORGANS`."""


def rule_for(organ: str) -> PostprocessRule:
    """The :data:`ORGAN_RULES` rule of ``organ`` (checked by
    :func:`~anunet_core.vocabulary.validate_organ`)."""
    return ORGAN_RULES[validate_organ(organ)]


@dataclass(frozen=True, eq=False)
class PostprocessResult:
    """One post-processed mask.

    Attributes:
        mask: uint8 ``(I, J, K)``, 0/1, the input's shape; a new array.
        components: the number of 3-D components of the input mask (0 when empty).
        kept: the number of components kept.
        removed_voxels: foreground voxels set to 0.
    """

    mask: np.ndarray
    components: int
    kept: int
    removed_voxels: int


def foreground(mask: np.ndarray) -> np.ndarray:
    """bool ``(I, J, K)``, C-contiguous: where a 0/1 ``mask`` is 1.

    ``mask`` is a 3-D bool or integer array of 0s and 1s (``ValueError`` otherwise: a label map
    with values 2, 3 ... passed by mistake is refused, not merged). The result may share
    memory with ``mask`` (a bool or 8-bit mask that is already C-contiguous); never write to it.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (I, J, K), got shape {mask.shape}")
    if mask.dtype == np.bool_:
        return np.ascontiguousarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must be bool or integer 0/1 (threshold first), got dtype {mask.dtype}")
    if mask.size:
        low, high = mask.min(), mask.max()
        if low < 0 or high > 1:
            raise ValueError(f"mask values must be 0 or 1, got values from {low} to {high}")
    if mask.dtype.itemsize == 1:
        return np.ascontiguousarray(mask).view(np.bool_)
    return np.not_equal(mask, 0, order="C")


def kept_components(sizes: np.ndarray, rule: PostprocessRule, voxel_ml: float) -> np.ndarray:
    """Indices into ``sizes`` of the components ``rule`` keeps, largest first.

    ``sizes`` are the components' voxel counts in the order of their first voxel (C order): of
    equal sizes the earlier wins. The ``rule.keep_components`` largest are taken, and of those
    the ones of at least ``rule.min_blob_ml`` mL (``size * voxel_ml``) kept.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    order = np.argsort(-sizes, kind="stable")[: rule.keep_components]
    return order[sizes[order] * float(voxel_ml) >= rule.min_blob_ml]


def postprocess_organ(
    mask: np.ndarray, organ: str, voxel_ml: float, rule: PostprocessRule | None = None
) -> PostprocessResult:
    """``mask`` with only the components its organ's rule keeps (see the module docstring).

    Args:
        mask: ``(I, J, K)`` bool or integer 0/1 (see :func:`foreground`); not modified.
        organ: one of :data:`~anunet_core.vocabulary.ORGANS`.
        voxel_ml: the volume of one voxel in mL (finite, > 0), e.g.
            :func:`anunet_core.io.voxel_volume_ml` of the scan's affine.
        rule: default :func:`rule_for` ``(organ)``.

    Returns:
        a :class:`PostprocessResult`; an empty mask comes back empty with 0 components.
    """
    organ = validate_organ(organ)
    rule = rule_for(organ) if rule is None else rule
    if not isinstance(rule, PostprocessRule):
        raise ValueError(f"rule must be a PostprocessRule, got {rule!r}")
    if not (_is_real(voxel_ml) and math.isfinite(voxel_ml) and voxel_ml > 0):
        raise ValueError(f"voxel_ml must be a finite number of mL > 0, got {voxel_ml!r}")
    inside = foreground(mask)
    total = int(np.count_nonzero(inside))
    if total == 0:
        return PostprocessResult(np.zeros(inside.shape, dtype=np.uint8), 0, 0, 0)
    labels, n = cc3d.connected_components(inside.view(np.uint8), connectivity=CONNECTIVITY, return_N=True)
    component_of = labels[inside]  # label of each foreground voxel, C order
    sizes = np.bincount(component_of, minlength=n + 1)[1:]
    keep = kept_components(sizes, rule, voxel_ml)
    if keep.size == n:
        out = inside.astype(np.uint8)
    else:
        chosen = np.zeros(n + 1, dtype=np.bool_)
        chosen[keep + 1] = True
        out = np.zeros(inside.shape, dtype=np.uint8)
        out[inside] = chosen[component_of]
    return PostprocessResult(out, int(n), int(keep.size), total - int(sizes[keep].sum()))
