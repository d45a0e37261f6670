"""A quality-control test cohort: CT cases of which some are made hard on purpose,
:func:`make_qc_cohort`.

About half the cohort is ordinary CT phantoms (``"normal"``); the rest are CT phantoms given one
deliberate problem each (:data:`HARD_KINDS`), the failure modes QC must flag:

===========  =================================================================================
kind         what is done to ``make_phantom(seed, "CT")`` (defaults below)
===========  =================================================================================
normal       nothing
mr           the MR phantom of the seed (T2SPIR or T1, drawn), written as a CT case
noise        Gaussian noise, sd drawn in :data:`NOISE_SD_HU` (150-250 HU)
bias         a linear intensity ramp across ``i`` (left-right, sign drawn) of +-A HU at the
             field of view's edges, A drawn in :data:`BIAS_HU` (250-350 HU), plus a ramp
             across ``j`` of at most +-:data:`BIAS_J_HU` (100 HU)
cropped      the slices above (or below, drawn) the organ's middle slice dropped, so the organ
             reaches the scan's first or last slice; dropping slices at the start of ``k``
             moves the affine's origin, so every kept voxel stays where it was in mm
size         image and labels zoomed in-plane about the centre by a factor drawn from
             :data:`SIZE_FACTORS` (0.6 or 1.5) on the same grid: the organ's in-plane area is
             x0.36 or x2.25 (less what leaves the field of view); new voxels are air
position     image and labels shifted in-plane by :data:`POSITION_SHIFT` (a quarter) of the
             field of view along ``i``, toward the side the organ is not on, and an eighth
             along ``j``, toward the centre; new voxels are air
===========  =================================================================================

The manipulations assume a field of view that holds the abdomen, as the default one does
(``shape * spacing`` = 384 x 384 x 240 mm): a small grid should keep it with coarser voxels
(e.g. ``(48, 48, 16)`` at ``(8, 8, 15)`` mm), or the organ is already cut off before ``size``
and ``position`` move it.

Intensities stay whole numbers (int16 on disk, as every phantom); CT manipulations clip to
``[-1024, 3071]`` HU, the phantom's range. The affine is the phantom's except for ``cropped``.

Layout (:func:`~anunet_core.synthetic.nifti.write_msd`, so ``jobs/segment.py`` and
``jobs/evaluate.py`` read it like any MSD archive)::

    OUT/imagesTr/case_0000.nii.gz ...   int16 (I, J, K'), all "CT"
    OUT/labelsTr/case_0000.nii.gz ...   uint8, organ = 1
    OUT/dataset.json
    OUT/cohort.json                     {"cases": [{"case_id", "kind", "seed", "detail"}, ...]}

Case ids are ``case_0000`` ... in order and the kinds are shuffled (seeded) among them, so no
file name or position tells a case's kind: only ``cohort.json`` does. Case ``i``'s anatomy and
manipulation come from ``case_seed(seed, i)``, so a cohort is reproducible byte for byte.

Example::

    >>> cases = make_qc_cohort("/tmp/qc", cases_per_kind=2, shape=(64, 64, 24), spacing=(6, 6, 10))
    >>> len(cases), sum(c.kind == "normal" for c in cases)
    (16, 4)
    >>> read_cohort("/tmp/qc") == cases
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from anunet_core.synthetic.files import write_bytes_atomic
from anunet_core.synthetic.nifti import write_msd
from anunet_core.synthetic.phantom import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    MR_SEQUENCES,
    Phantom,
    case_seed,
    make_phantom,
)
from anunet_core.vocabulary import ORGAN_LABEL_VALUES, validate_organ

__all__ = [
    "BIAS_HU",
    "BIAS_J_HU",
    "COHORT_FILE",
    "HARD_KINDS",
    "NOISE_SD_HU",
    "POSITION_SHIFT",
    "SIZE_FACTORS",
    "CohortCase",
    "make_hard_case",
    "make_qc_cohort",
    "read_cohort",
]

HARD_KINDS: tuple[str, ...] = ("mr", "noise", "bias", "cropped", "size", "position")
"""The deliberate problems, in a fixed order (a cohort's shuffle depends on it)."""
COHORT_FILE = "cohort.json"
"""The file beside ``imagesTr`` that lists each case's kind."""
NOISE_SD_HU: tuple[float, float] = (150.0, 250.0)
"""``noise``: the range the Gaussian noise's sd (HU) is drawn from."""
BIAS_HU: tuple[float, float] = (250.0, 350.0)
"""``bias``: the range of the left-right ramp's amplitude A (HU at the edges, +-A)."""
BIAS_J_HU: float = 100.0
"""``bias``: the largest amplitude (HU) of the front-back ramp."""
SIZE_FACTORS: tuple[float, float] = (0.6, 1.5)
"""``size``: the in-plane zoom factors one is drawn from (shrink, enlarge)."""
POSITION_SHIFT: float = 0.25
"""``position``: the in-plane shift along ``i`` as a fraction of the field of view (``j``: half)."""

_AIR_HU = -1000.0
_CT_RANGE_HU = (-1024.0, 3071.0)
_ORDER_STREAM = 0x9D  # the kinds' shuffle: np.random.default_rng([seed, _ORDER_STREAM])
_CASE_STREAM = 0x9C  # case i's manipulation: np.random.default_rng([case_seed(seed, i), _CASE_STREAM])


@dataclass(frozen=True)
class CohortCase:
    """One case of a QC cohort.

    Attributes:
        case_id: ``"case_0000"`` ...; the file name stem in ``imagesTr`` and ``labelsTr``.
        kind: ``"normal"`` or one of :data:`HARD_KINDS`.
        seed: the phantom's seed (``case_seed(cohort seed, index)``); ``make_phantom(seed,
            "CT", shape, spacing)`` is the case before its manipulation.
        detail: the manipulation drawn, in words (e.g. ``"gaussian noise sd 187 HU"``);
            ``""`` for normal cases.
    """

    case_id: str
    kind: str
    seed: int
    detail: str = ""


def make_qc_cohort(
    out_dir: str | os.PathLike,
    cases_per_kind: int = 2,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    organ: str = "liver",
    kinds: Sequence[str] = HARD_KINDS,
) -> list[CohortCase]:
    """Write a QC test cohort of CT cases as one MSD archive plus ``cohort.json``.

    Args:
        out_dir: the archive's root (created). It may hold an earlier cohort's files of the
            same case ids (they are overwritten), but no other ``imagesTr`` case.
        cases_per_kind: cases of each hard kind (>= 1); the cohort also has
            ``2 * cases_per_kind`` normal cases. Default 2.
        seed: cohort seed (>= 0). Default 0.
        shape, spacing: ``(I, J, K)`` voxels and their size in mm; see
            :func:`~anunet_core.synthetic.phantom.make_phantom`. Default ``(128, 128, 48)``,
            ``(3.0, 3.0, 5.0)``; keep the field of view (``shape * spacing``) around the
            default 384 x 384 x 240 mm. Cropped cases have fewer than ``K`` slices.
        organ: the organ labelled (``labelsTr``: organ = 1), and the one ``cropped``,
            ``position`` work on. Default ``"liver"``.
        kinds: the hard kinds to include, a subset of :data:`HARD_KINDS` without repeats
            (normal cases are always included). Default all of them.

    Returns:
        the cases in case-id order, as listed in ``cohort.json``
        (``(2 + len(kinds)) * cases_per_kind`` of them).
    """
    organ, kinds = _checked(cases_per_kind, seed, organ, kinds)
    n = int(cases_per_kind)
    plan = ["normal"] * (2 * n) + [k for k in kinds for _ in range(n)]
    order = np.random.default_rng([int(seed), _ORDER_STREAM]).permutation(len(plan))
    plan = [plan[int(o)] for o in order]
    ids = [f"case_{i:04d}" for i in range(len(plan))]

    out = Path(out_dir)
    _check_no_other_cases(out, ids)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for i, (case_id, kind) in enumerate(zip(ids, plan)):  # one phantom in memory at a time
        s = case_seed(seed, i)
        phantom, detail = make_hard_case(kind, s, shape, spacing, organ, case_id=case_id)
        write_msd(out, [phantom], organ)
        cases.append(CohortCase(case_id, kind, s, detail))
    meta = {
        "description": "QC test cohort: CT cases, some made hard on purpose (anunet_core.synthetic.hard_cases)",
        "seed": int(seed),
        "organ": organ,
        "modality": "CT",
        "shape": [int(v) for v in shape],
        "spacing": [float(v) for v in spacing],
        "cases_per_kind": n,
        "kinds": ["normal", *kinds],
        "cases": [dataclasses.asdict(c) for c in cases],
    }
    write_bytes_atomic(out / COHORT_FILE, (json.dumps(meta, indent=2) + "\n").encode())
    return cases


def read_cohort(out_dir: str | os.PathLike) -> list[CohortCase]:
    """The cases listed in ``out_dir/cohort.json`` (written by :func:`make_qc_cohort`)."""
    meta = json.loads((Path(out_dir) / COHORT_FILE).read_text())
    return [CohortCase(c["case_id"], c["kind"], int(c["seed"]), c.get("detail", "")) for c in meta["cases"]]


def make_hard_case(
    kind: str,
    seed: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    organ: str = "liver",
    *,
    case_id: str | None = None,
) -> tuple[Phantom, str]:
    """One case of ``kind`` (``"normal"`` or one of :data:`HARD_KINDS`) from ``seed``.

    Returns ``(phantom, detail)``: a CT :class:`Phantom` (``modality == "CT"`` even for
    ``"mr"``) whose ``image``, ``labels``, ``lesions``, ``tissue`` and ``affine`` carry the
    manipulation, and the manipulation drawn in words. The draw uses its own random stream,
    so the anatomy is that of ``make_phantom(seed, "CT", shape, spacing)``.
    """
    if kind not in _MAKERS:
        raise ValueError(f"kind must be 'normal' or one of {HARD_KINDS}, got {kind!r}")
    organ = validate_organ(organ)
    rng = np.random.default_rng([int(seed), _CASE_STREAM])
    if kind == "mr":
        sequence = MR_SEQUENCES[int(rng.integers(len(MR_SEQUENCES)))]
        p = make_phantom(seed, "MR", shape, spacing, sequence=sequence, case_id=case_id)
        return dataclasses.replace(p, modality="CT", sequence=None), f"MR {sequence} given as CT"
    p = make_phantom(seed, "CT", shape, spacing, case_id=case_id)
    return _MAKERS[kind](p, rng, ORGAN_LABEL_VALUES[organ])


# --- the manipulations: (CT phantom, rng, organ label values) -> (phantom, detail) ------------


def _normal(p: Phantom, rng: np.random.Generator, values) -> tuple[Phantom, str]:
    """The phantom unchanged."""
    return p, ""


def _noise(p: Phantom, rng: np.random.Generator, values) -> tuple[Phantom, str]:
    """i.i.d. Gaussian noise of one sd (HU) drawn in :data:`NOISE_SD_HU` on every voxel."""
    sd = float(rng.uniform(*NOISE_SD_HU))
    noisy = p.image + rng.normal(0.0, sd, p.image.shape).astype(np.float32)
    return dataclasses.replace(p, image=_ct_values(noisy)), f"gaussian noise sd {sd:.0f} HU"


def _bias(p: Phantom, rng: np.random.Generator, values) -> tuple[Phantom, str]:
    """An additive plane (HU): ``+-A`` at the ``i`` edges, ``+-B`` at the ``j`` edges."""
    amp_i = float(rng.uniform(*BIAS_HU)) * float(rng.choice([-1.0, 1.0]))
    amp_j = float(rng.uniform(-BIAS_J_HU, BIAS_J_HU))
    n_i, n_j, _ = p.shape
    ramp_i = np.linspace(-amp_i, amp_i, n_i, dtype=np.float32)  # -A at i = 0, +A at i = I - 1
    ramp_j = np.linspace(-amp_j, amp_j, n_j, dtype=np.float32)
    field = ramp_i[:, None, None] + ramp_j[None, :, None]
    detail = (f"bias ramp {amp_i:+.0f} HU at the right edge, {-amp_i:+.0f} HU at the left; "
              f"{amp_j:+.0f} HU anterior, {-amp_j:+.0f} HU posterior")
    return dataclasses.replace(p, image=_ct_values(p.image + field)), detail


def _cropped(p: Phantom, rng: np.random.Generator, values) -> tuple[Phantom, str]:
    """Keep slices ``0..m`` or ``m..K-1``, ``m`` the middle of the organ's ``k`` extent (of
    the scan when the organ is absent); the origin moves by ``start`` slices."""
    n_k = p.shape[2]
    ks = np.nonzero(np.isin(p.labels, values).any(axis=(0, 1)))[0]
    middle = (int(ks[0]) + int(ks[-1])) // 2 if ks.size else n_k // 2
    if rng.random() < 0.5:  # drop the slices above the middle: keep 0..middle
        start, stop, side = 0, middle + 1, "above"
    else:  # drop the slices below: keep middle..K-1, the origin moves up
        start, stop, side = middle, n_k, "below"
    affine = p.affine.copy()
    affine[:3, 3] += start * affine[:3, 2]
    cut = {f: getattr(p, f)[:, :, start:stop] for f in ("image", "labels", "lesions", "tissue")}
    cut = {f: np.ascontiguousarray(a) for f, a in cut.items()}
    detail = f"slices {side} the organ's middle dropped: {stop - start} of {n_k} kept"
    return dataclasses.replace(p, affine=affine, **cut), detail


def _size(p: Phantom, rng: np.random.Generator, values) -> tuple[Phantom, str]:
    """In-plane zoom about the grid's centre, on the same grid (``ndimage.affine_transform``:
    zoom, crop and pad in one resampling; linear for the image, nearest for label maps)."""
    factor = float(SIZE_FACTORS[int(rng.integers(len(SIZE_FACTORS)))])
    # output voxel x samples the input at centre + (x - centre) / factor, in-plane only
    scale = np.array([1.0 / factor, 1.0 / factor, 1.0])
    centre = (np.array(p.shape, dtype=np.float64) - 1.0) / 2.0
    offset = centre - scale * centre

    def warp(a: np.ndarray, order: int, fill: float) -> np.ndarray:
        return ndimage.affine_transform(a, scale, offset=offset, output_shape=a.shape,
                                        order=order, mode="constant", cval=fill)

    image = np.round(warp(p.image, 1, _AIR_HU)).astype(np.float32)
    fields = {
        "image": _ct_values(image),
        "labels": warp(p.labels, 0, 0),
        "lesions": warp(p.lesions.astype(np.uint8), 0, 0).astype(bool),
        "tissue": warp(p.tissue, 0, 0),
    }
    return dataclasses.replace(p, **fields), f"zoomed in-plane x{factor:g} about the centre"


def _position(p: Phantom, rng: np.random.Generator, values) -> tuple[Phantom, str]:
    """An in-plane shift (whole voxels, no wrap-around) away from the organ's side along
    ``i``, toward the centre along ``j``."""
    n_i, n_j, _ = p.shape
    organ = np.isin(p.labels, values)
    ii, jj, _ = np.nonzero(organ)
    c_i = float(ii.mean()) if ii.size else float(rng.uniform(0, n_i - 1))
    c_j = float(jj.mean()) if jj.size else float(rng.uniform(0, n_j - 1))
    # toward the other side along i, toward the centre along j (ties: drawn)
    sign_i = -np.sign(c_i - (n_i - 1) / 2) or float(rng.choice([-1.0, 1.0]))
    sign_j = -np.sign(c_j - (n_j - 1) / 2) or float(rng.choice([-1.0, 1.0]))
    d_i = int(sign_i * round(POSITION_SHIFT * n_i))
    d_j = int(sign_j * round(POSITION_SHIFT / 2 * n_j))
    fields = {
        "image": _shifted(p.image, d_i, d_j, _AIR_HU),
        "labels": _shifted(p.labels, d_i, d_j, 0),
        "lesions": _shifted(p.lesions, d_i, d_j, False),
        "tissue": _shifted(p.tissue, d_i, d_j, 0),
    }
    return dataclasses.replace(p, **fields), f"shifted in-plane by ({d_i:+d}, {d_j:+d}) voxels"


_MAKERS: dict[str, Callable[[Phantom, np.random.Generator, tuple[int, ...]], tuple[Phantom, str]]] = {
    "normal": _normal,
    "mr": _normal,  # made from the MR phantom in make_hard_case
    "noise": _noise,
    "bias": _bias,
    "cropped": _cropped,
    "size": _size,
    "position": _position,
}


def _ct_values(image: np.ndarray) -> np.ndarray:
    """``image`` rounded to whole HU and clipped to the phantom's CT range, float32."""
    return np.clip(np.round(image), *_CT_RANGE_HU).astype(np.float32)


def _shifted(a: np.ndarray, d_i: int, d_j: int, fill) -> np.ndarray:
    """``a`` ``(I, J, K)`` moved by ``(d_i, d_j)`` voxels in-plane (no wrap-around); the voxels
    uncovered hold ``fill``."""
    out = np.full_like(a, fill)
    n_i, n_j = a.shape[:2]
    src_i = slice(max(0, -d_i), n_i - max(0, d_i))
    dst_i = slice(max(0, d_i), n_i - max(0, -d_i))
    src_j = slice(max(0, -d_j), n_j - max(0, d_j))
    dst_j = slice(max(0, d_j), n_j - max(0, -d_j))
    out[dst_i, dst_j] = a[src_i, src_j]
    return out


def _checked(cases_per_kind, seed, organ, kinds) -> tuple[str, tuple[str, ...]]:
    """``(organ, kinds)`` checked (``ValueError`` naming the bad argument) and normalised."""
    if int(cases_per_kind) < 1:
        raise ValueError(f"cases_per_kind must be >= 1, got {cases_per_kind!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    organ = validate_organ(organ)
    if isinstance(kinds, str):
        raise TypeError(f"kinds must be a sequence of kind names, got the string {kinds!r}")
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in HARD_KINDS]
    if unknown:
        raise ValueError(f"unknown kind {unknown[0]!r}: kinds must be among {HARD_KINDS} "
                         "(normal cases are always included)")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds must not repeat, got {kinds!r}")
    return organ, kinds


def _check_no_other_cases(out: Path, ids: list[str]) -> None:
    """Refuse an ``out`` whose ``imagesTr`` holds cases this cohort would not overwrite (they
    would be segmented and evaluated with no kind)."""
    images = out / "imagesTr"
    if not images.is_dir():
        return
    names = {f"{case_id}.nii.gz" for case_id in ids}
    others = sorted(f.name for f in images.iterdir() if f.name not in names)
    if others:
        raise ValueError(f"{out}: imagesTr already holds {len(others)} other file(s) "
                         f"(e.g. {others[0]!r}); write the cohort to an empty folder")
