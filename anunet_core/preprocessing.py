"""Volume -> model slices and back: the ONE preprocessing used by ingest and segmentation.

Training (ingest) and inference (segment) both call :func:`preprocess_volume`, so the two can
never drift; :func:`restore_mask` undoes it exactly from the :class:`SliceGeometry` record.

Recipe (``PREPROCESSING_VERSION``; change the version string whenever any step changes):

1. Intensity, to the fixed output range ``OUTPUT_RANGE = (0.0, 1.0)`` (float32):

   - CT: clip to the HU window ``CT_WINDOW_HU = (-200, 200)`` (paper section 4.1), then
     scale linearly: -200 HU -> 0.0, 0 HU -> 0.5, +200 HU -> 1.0.
   - MR: per volume, clip to the 0.5th and 99.5th percentiles (``MR_PERCENTILES``) of the
     volume's non-zero voxels (exact zeros are treated as padding/background and left out;
     all voxels are used if none is non-zero), then scale linearly to [0, 1]. One bright
     outlier voxel therefore cannot compress the contrast. A constant volume gives all 0.0.
   - Non-finite voxels (NaN, inf) become 0.0 (the bottom of the range).

2. Orientation: reorient the voxel array to the closest canonical RAS+ orientation
   (``nibabel.orientations.io_orientation`` + ``apply_orientation``: axis permutations and
   flips only, exact), so axial slices lie along the last axis, ordered inferior -> superior.

3. Slice view: each axial slice is presented in the radiological view,
   ``slices[k, r, c] = ras[X - 1 - c, Y - 1 - r, k]``: row ``r`` runs anterior -> posterior
   (top of the image = anterior), column ``c`` runs patient right -> left. For a standard
   axial DICOM series this is exactly ``pixel_array`` of slice ``k``.

4. Resize each slice from its in-plane shape ``(rows, cols)`` to ``(size, size)`` directly
   (no padding, aspect ratio not kept; the original shape is recorded): images bilinear
   (``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, no
   antialiasing), labels nearest neighbour with the same pixel-centre convention
   (``nearest-exact``: source index ``floor((dst + 0.5) * in / out)``).

:func:`restore_mask` resizes probabilities back bilinearly to ``(rows, cols)``, thresholds
them (``p > threshold``, 0.5 by default, the same rule as :mod:`anunet_core.metrics`), and
undoes steps 3 and 2, giving a uint8 mask on the original voxel grid.

:func:`restore_label_map` does the same for several organs at once, giving one label map:
each organ's probabilities are resized and thresholded exactly as :func:`restore_mask` does,
and a voxel above the threshold for several organs goes to the one with the highest resized
probability (ties: the organ listed first). :func:`label_slices` applies the same rule in the
model's view, without resizing (for previews).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    io_orientation,
    ornt_transform,
)

from anunet_core.io.geometry import SliceGeometry
from anunet_core.io.volume import Volume
from anunet_core.vocabulary import validate_modality

__all__ = [
    "CT_WINDOW_HU",
    "DEFAULT_SIZE",
    "MR_PERCENTILES",
    "OUTPUT_RANGE",
    "PREPROCESSING_VERSION",
    "label_slices",
    "label_to_mask",
    "normalize_intensity",
    "preprocess_label",
    "preprocess_volume",
    "restore_label_map",
    "restore_mask",
]

PREPROCESSING_VERSION = "anunet-prep-1"
CT_WINDOW_HU: tuple[float, float] = (-200.0, 200.0)
MR_PERCENTILES: tuple[float, float] = (0.5, 99.5)
OUTPUT_RANGE: tuple[float, float] = (0.0, 1.0)
DEFAULT_SIZE = 256

_RAS = axcodes2ornt(("R", "A", "S"))
_CHUNK = 64  # slices resized per torch call (bounds peak memory on big volumes)


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------


def normalize_intensity(
    array: np.ndarray, modality: str
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float] | None]:
    """Map intensities to ``OUTPUT_RANGE`` (see the module docstring).

    Returns ``(normalised float32 array of the same shape, window, percentiles)``, where
    ``window`` is the (low, high) input intensity mapped to (0, 1): the HU window for CT, the
    measured percentile values for MR; ``percentiles`` is ``None`` for CT.
    """
    modality = validate_modality(modality)
    data = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(data)
    all_finite = bool(finite.all())
    if modality == "CT":
        lo, hi = CT_WINDOW_HU
        pct = None
    else:  # MR (validate_modality admits CT and MR only)
        values = data[finite] if not all_finite else data.ravel()
        nonzero = values[values != 0]
        if nonzero.size:
            values = nonzero
        if values.size:
            lo, hi = (float(v) for v in np.percentile(values, MR_PERCENTILES))
        else:
            lo = hi = 0.0
        pct = MR_PERCENTILES
    out_lo, out_hi = OUTPUT_RANGE
    out = np.empty(data.shape, dtype=np.float32)
    if hi > lo:
        np.clip(data, lo, hi, out=out)
        out -= np.float32(lo)
        out *= np.float32((out_hi - out_lo) / (hi - lo))
        if out_lo:
            out += np.float32(out_lo)
    else:
        out.fill(out_lo)
    if not all_finite:
        out[~finite] = out_lo
    return out, (float(lo), float(hi)), pct


def _to_view(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Source voxel array -> (K, rows, cols) radiological-view slices (a view when possible)."""
    ras = apply_orientation(array, ornt)
    return ras[::-1, ::-1, :].transpose(2, 1, 0)


def _from_view(slices: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_to_view`: (K, rows, cols) -> source voxel array layout."""
    ras = slices.transpose(2, 1, 0)[::-1, ::-1, :]
    return apply_orientation(ras, ornt_transform(_RAS, ornt))


def _resize_bilinear(slices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, H, W) float -> (K, *shape) float32, bilinear, align_corners=False."""
    slices = np.asarray(slices, dtype=np.float32)
    if slices.shape[1:] == tuple(shape):
        return np.ascontiguousarray(slices)
    out = np.empty((slices.shape[0], *shape), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, slices.shape[0], _CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(slices[start : start + _CHUNK]))
            res = F.interpolate(chunk[:, None], size=shape, mode="bilinear", align_corners=False)
            out[start : start + _CHUNK] = res[:, 0].numpy()
    return out


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _resize_nearest(slices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, H, W) any dtype -> (K, *shape), nearest neighbour (nearest-exact convention)."""
    if slices.shape[1:] == tuple(shape):
        return np.ascontiguousarray(slices)
    rows = _nearest_index(slices.shape[1], shape[0])
    cols = _nearest_index(slices.shape[2], shape[1])
    return np.ascontiguousarray(slices[:, rows[:, None], cols[None, :]])


def _check_probability_range(lo: float, hi: float, what: str) -> None:
    """``ValueError`` unless ``[lo, hi]`` lies in ``[0, 1]`` (1e-6 slack for float rounding)."""
    if lo < -1e-6 or hi > 1 + 1e-6 or math.isnan(lo) or math.isnan(hi):
        raise ValueError(
            f"{what} must be probabilities in [0, 1], got range [{lo:.3g}, {hi:.3g}] "
            "(logits? apply a sigmoid first)"
        )


def _label_view(
    probs: np.ndarray, shape: tuple[int, int], values: Sequence[int], threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(O, K, H, W)`` probabilities -> ``(label slices (K, *shape) uint8, overlap (O,) int64,
    lost (O,) int64)``: each organ resized bilinearly to ``shape`` and thresholded
    (``p > threshold``); a pixel above it for several organs goes to the highest resized
    probability, ties to the organ listed first. ``_CHUNK`` slices at a time: one resized
    float32 chunk per organ at most, never a full-size float volume."""
    num_organs, k = probs.shape[:2]
    labels = np.empty((k, *shape), dtype=np.uint8)
    overlap = np.zeros(num_organs, dtype=np.int64)
    lost = np.zeros(num_organs, dtype=np.int64)
    for start in range(0, k, _CHUNK):
        label = labels[start : start + _CHUNK]
        best = None  # highest resized probability so far (may be the caller's array: never written)
        above = []
        for value, organ_probs in zip(values, probs):
            resized = _resize_bilinear(organ_probs[start : start + _CHUNK], shape)
            hit = resized > threshold
            if best is None:
                np.multiply(hit, np.uint8(value), out=label)
                best = resized
            else:
                # strictly higher: a tie stays with the organ listed first
                label[hit & (resized > best)] = value
                best = np.maximum(best, resized)
            if num_organs > 1:
                above.append(hit)
        if num_organs > 1:
            count = np.zeros(label.shape, dtype=np.uint8)
            for hit in above:
                count += hit
            shared = count > 1
            for o, (value, hit) in enumerate(zip(values, above)):
                overlap[o] += np.count_nonzero(hit & shared)
                lost[o] += np.count_nonzero(hit & (label != value))
    return labels, overlap, lost


def _organ_probabilities(
    probabilities: np.ndarray | torch.Tensor, values: Sequence[int]
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Checked ``(O, K, H, W)`` probabilities (a NumPy array) and their ``O`` label values."""
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().to("cpu", torch.float32).numpy()
    probs = np.asarray(probabilities)
    if probs.ndim != 4 or probs.shape[0] < 1:
        raise ValueError(f"probabilities must be (O, K, S, S) with O >= 1 organs, got shape {probs.shape}")
    if not (np.issubdtype(probs.dtype, np.floating) or np.issubdtype(probs.dtype, np.integer)
            or probs.dtype == np.bool_):
        raise ValueError(f"probabilities must be numbers, got dtype {probs.dtype}")
    values = tuple(values)
    if len(values) != probs.shape[0]:
        raise ValueError(f"values must give one label value per organ ({probs.shape[0]}), got {values!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= v <= 255 for v in values):
        raise ValueError(f"label values must be integers in 1..255, got {values!r}")
    values = tuple(int(v) for v in values)
    if len(set(values)) != len(values):
        raise ValueError(f"label values must be distinct, got {values!r}")
    if probs.size:
        lows, highs = probs.min(axis=(1, 2, 3)), probs.max(axis=(1, 2, 3))  # NaN shows as NaN
        for value, lo, hi in zip(values, lows, highs):
            _check_probability_range(float(lo), float(hi), f"the slices of label value {value}")
    return probs, values


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def preprocess_volume(
    volume: Volume, size: int = DEFAULT_SIZE
) -> tuple[np.ndarray, SliceGeometry]:
    """Volume -> model input slices.

    Args:
        volume: the scan (HU for CT, scanner units for MR), any orientation.
        size: side of the output slices in pixels.

    Returns:
        ``(slices, geometry)``: ``slices`` float32 ``(K, size, size)`` in ``OUTPUT_RANGE``
        (``[0, 1]``), K axial slices ordered inferior -> superior, radiological view;
        ``geometry`` the record :func:`restore_mask` and :func:`preprocess_label` need.

    Non-finite voxels (NaN, inf) read as background (see :func:`normalize_intensity`); a scan
    with no finite voxel at all raises ``ValueError``.
    """
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    size = int(size)
    array = np.asarray(volume.array)
    if array.size and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).any():
        raise ValueError(f"{volume.case_id}: the scan has no finite voxel (all NaN or infinite)")
    ornt = io_orientation(volume.affine)
    normalised, window, pct = normalize_intensity(array, volume.modality)
    view = _to_view(normalised, ornt)
    geometry = SliceGeometry(
        original_shape=array.shape,
        original_affine=volume.affine,
        ornt=ornt.astype(int),
        inplane_shape=view.shape[1:],
        size=size,
        modality=volume.modality,
        intensity_window=window,
        percentiles=pct,
        output_range=OUTPUT_RANGE,
        version=PREPROCESSING_VERSION,
    )
    return _resize_bilinear(view, (size, size)), geometry


def preprocess_label(label_array: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Label volume on the image's voxel grid -> uint8 slices ``(K, size, size)``.

    ``label_array`` must have ``geometry.original_shape`` (align it first with
    :func:`anunet_core.io.align_label_to_image`) and values in 0..255 (label values or a
    binary mask: nearest neighbour keeps the values). Same reorientation and view as the image.
    """
    labels = np.asarray(label_array)
    if labels.shape != geometry.original_shape:
        raise ValueError(
            f"label shape {labels.shape} differs from the image shape {geometry.original_shape}"
        )
    if labels.dtype != np.uint8:
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            rounded = np.rint(labels)
            if not np.array_equal(rounded, labels):
                raise ValueError("label array must hold integer values")
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("label values must be within 0..255 (map them to a mask first)")
        labels = labels.astype(np.uint8)
    view = _to_view(labels, np.array(geometry.ornt, dtype=float))
    return _resize_nearest(view, (geometry.size, geometry.size))


def restore_mask(
    slices: np.ndarray | torch.Tensor, geometry: SliceGeometry, threshold: float = 0.5
) -> np.ndarray:
    """Model output slices -> uint8 binary mask on the source voxel grid.

    Args:
        slices: probabilities (or a 0/1 mask) ``(K, size, size)``, or ``(K, 1, size, size)``,
            values in [0, 1] (apply the sigmoid to logits first).
        geometry: from :func:`preprocess_volume` of the same volume.
        threshold: foreground is ``p > threshold`` after bilinear resizing back.

    Returns:
        uint8 mask (0/1) of shape ``geometry.original_shape`` in the source axis order, ready
        for :func:`anunet_core.io.write_mask` with the source volume.
    """
    if isinstance(slices, torch.Tensor):
        slices = slices.detach().to("cpu", torch.float32).numpy()
    probs = np.asarray(slices)
    if probs.ndim == 4 and probs.shape[1] == 1:
        probs = probs[:, 0]
    expected = (geometry.num_slices, geometry.size, geometry.size)
    if probs.shape != expected:
        raise ValueError(f"slices shape {probs.shape} differs from expected {expected}")
    probs = probs.astype(np.float32, copy=False)
    if probs.size:
        # NaN pixels among valid probabilities read as background; all-NaN slices are refused
        _check_probability_range(float(np.nanmin(probs)), float(np.nanmax(probs)), "slices")
    mask, _, _ = _label_view(probs[None], geometry.inplane_shape, (1,), threshold)
    out = _from_view(mask, np.array(geometry.ornt, dtype=float))
    return np.ascontiguousarray(out)


def restore_label_map(
    probabilities: np.ndarray | torch.Tensor,
    geometry: SliceGeometry,
    values: Sequence[int],
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several organs' model output slices -> one uint8 label map on the source voxel grid.

    Each organ's probabilities are resized back and thresholded exactly as
    :func:`restore_mask` does; a voxel above the threshold for one organ gets that organ's
    value, a voxel above it for several organs gets the value of the organ with the highest
    resized probability (ties: the organ listed first), every other voxel 0. With one organ
    the label map is ``restore_mask(probabilities[0], geometry, threshold) * values[0]``.
    Works ``_CHUNK`` slices at a time (no full-size float volume per organ).

    Args:
        probabilities: ``(O, K, size, size)`` for ``O`` organs, values in [0, 1] (apply the
            sigmoid to logits first).
        geometry: from :func:`preprocess_volume` of the same volume.
        values: the ``O`` organs' label values, in the order of ``probabilities``: distinct
            integers in 1..255 (e.g. :data:`anunet_core.vocabulary.ORGAN_MAP_VALUES`).
        threshold: an organ is present where ``p > threshold`` after resizing back. Default 0.5.

    Returns:
        ``(label_map, overlap, lost)``: ``label_map`` uint8 of shape ``geometry.original_shape``
        ``(I, J, K0)`` in the source axis order (ready for :func:`anunet_core.io.write_mask`);
        ``overlap`` int64 ``(O,)``: voxels where organ ``o`` was above the threshold together
        with at least one other organ; ``lost`` int64 ``(O,)``: of those, the voxels another
        organ won.
    """
    probs, values = _organ_probabilities(probabilities, values)
    expected = (len(values), geometry.num_slices, geometry.size, geometry.size)
    if probs.shape != expected:
        raise ValueError(f"probabilities shape {probs.shape} differs from expected {expected}")
    labels, overlap, lost = _label_view(probs, geometry.inplane_shape, values, threshold)
    out = _from_view(labels, np.array(geometry.ornt, dtype=float))
    return np.ascontiguousarray(out), overlap, lost


def label_slices(
    probabilities: np.ndarray | torch.Tensor, values: Sequence[int], threshold: float = 0.5
) -> np.ndarray:
    """Several organs' probabilities -> uint8 label slices ``(K, S, S)`` in the model's view.

    The rule of :func:`restore_label_map` (``p > threshold``; the highest probability wins a
    pixel claimed by several organs, ties go to the organ listed first) without resizing back:
    what a preview shows. ``probabilities`` is ``(O, K, S, S)`` in [0, 1]; ``values`` the
    ``O`` distinct label values in 1..255; ``threshold`` defaults to 0.5.
    """
    probs, values = _organ_probabilities(probabilities, values)
    labels, _, _ = _label_view(probs, probs.shape[2:], values, threshold)
    return labels


def label_to_mask(label_array: np.ndarray, label_values: Iterable[int]) -> np.ndarray:
    """uint8 binary mask: 1 where the label is one of ``label_values`` (e.g. ``{2, 3}`` merges
    left and right kidney), 0 elsewhere (every other structure is background)."""
    values = sorted({int(v) for v in label_values})
    if not values:
        raise ValueError("label_values must name at least one label value")
    return np.isin(np.asarray(label_array), values).astype(np.uint8)
