"""Bring a label volume onto its image's voxel grid, exactly (no interpolation)."""

from __future__ import annotations

import numpy as np

from anunet_core.io.volume import LabelMismatchError, Volume, fmt_shape, fmt_vec, spacing_mm

__all__ = ["align_label_to_image"]


def align_label_to_image(
    label_array: np.ndarray,
    label_affine: np.ndarray,
    image: Volume,
    tol_mm: float = 0.1,
) -> np.ndarray:
    """Bring a label volume onto ``image``'s voxel grid, exactly (no interpolation).

    Works when the two grids are the same set of voxel centres stored in a different axis
    order/direction: ``T = inv(label_affine) @ image.affine`` (image index -> label index) must
    be a signed permutation with an integer translation, every image voxel centre landing
    within ``tol_mm`` of a label voxel centre, and the label grid must match the image grid
    exactly (same extent). The label array is then transposed/flipped. Identical grids return
    ``label_array`` itself. Anything else (other spacing, region, shape, rotation) raises
    :class:`LabelMismatchError` with a one-line reason.

    Returns:
        The label array (same dtype) with shape ``image.shape``.
    """
    labels = np.asarray(label_array)
    label_affine = np.asarray(label_affine, dtype=np.float64)
    if labels.ndim != 3:
        raise LabelMismatchError(f"label volume must be 3-D, got shape {labels.shape}")
    if label_affine.shape != (4, 4) or abs(np.linalg.det(label_affine[:3, :3])) < 1e-12:
        raise LabelMismatchError("label affine is not an invertible 4x4 matrix")
    if labels.shape == image.shape and np.allclose(label_affine, image.affine, rtol=0, atol=1e-6):
        return labels
    perm, signs, offset = _axis_map(label_affine, image, tol_mm)
    _check_extent(labels.shape, image.shape, perm, signs, offset)
    out = labels.transpose(tuple(int(p) for p in perm))
    flip_axes = tuple(int(c) for c in range(3) if signs[c] < 0)
    if flip_axes:
        out = np.flip(out, axis=flip_axes)
    return np.ascontiguousarray(out)


def _axis_map(label_affine: np.ndarray, image: Volume, tol_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(perm, signs, offset)``: image axis ``c`` is label axis ``perm[c]``, run in direction
    ``signs[c]``; ``offset`` is the integer label index of image voxel (0, 0, 0). Refuses a
    rotation, another spacing, or centres more than ``tol_mm`` apart."""
    transform = np.linalg.inv(label_affine) @ image.affine  # image index -> label index
    lin, trans = transform[:3, :3], transform[:3, 3]
    perm = np.argmax(np.abs(lin), axis=0)
    if sorted(perm.tolist()) != [0, 1, 2]:
        raise LabelMismatchError(
            "label grid is rotated relative to the image grid (not an axis permutation/flip)"
        )
    signs = np.sign(lin[perm, [0, 1, 2]])
    img_sp = np.array(image.spacing)
    lab_sp = np.array(spacing_mm(label_affine))[perm]  # in image axis order
    extent = np.maximum(np.array(image.shape) - 1, 1)
    if np.any(np.abs(img_sp - lab_sp) * extent > tol_mm):
        raise LabelMismatchError(
            f"label spacing {fmt_vec(lab_sp)} mm (in image axis order) differs from image "
            f"spacing {fmt_vec(img_sp)} mm"
        )
    perm_matrix = np.zeros((3, 3))
    perm_matrix[perm, [0, 1, 2]] = signs
    offset = np.rint(trans)
    # Worst-case distance (mm) between a mapped image voxel centre and its label voxel centre,
    # over the 8 corners of the image grid (the error is affine, so the corners bound it).
    label_sp_all = np.array(spacing_mm(label_affine))
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in image.shape], indexing="ij"))
    corners = corners.reshape(3, -1).astype(np.float64)
    exact = lin @ corners + trans[:, None]
    snapped = perm_matrix @ corners + offset[:, None]
    dev_mm = float(np.max(np.linalg.norm((exact - snapped) * label_sp_all[:, None], axis=0)))
    if dev_mm > tol_mm:
        raise LabelMismatchError(
            f"label voxel centres are {dev_mm:.3f} mm off the image's (> {tol_mm} mm): rotated "
            f"or shifted by a fraction of a voxel"
        )
    return perm, signs, offset


def _check_extent(label_shape, img_shape, perm: np.ndarray, signs: np.ndarray, offset: np.ndarray) -> None:
    """The label grid covers exactly the image grid: same size per axis, not shifted."""
    lab_shape_img_order = tuple(label_shape[p] for p in perm)
    if lab_shape_img_order != tuple(img_shape):
        what = (
            "does not cover"
            if any(a < b for a, b in zip(lab_shape_img_order, img_shape))
            else "is larger than"
        )
        raise LabelMismatchError(
            f"label grid {fmt_shape(lab_shape_img_order)} (in image axis order) {what} "
            f"image grid {fmt_shape(img_shape)}"
        )
    # Label index along label axis perm[c] for image index i: signs[c] * i + offset[perm[c]];
    # must be i (sign +1, offset 0) or n - 1 - i (sign -1, offset n - 1).
    start = np.array([offset[perm[c]] for c in range(3)])
    want = np.where(signs > 0, 0, np.array(img_shape) - 1)
    if not np.array_equal(start, want):
        shift = tuple(int(v) for v in (start - want) * signs)
        raise LabelMismatchError(
            f"label grid is shifted by {shift} voxels (in image axis order) relative to "
            f"image grid {fmt_shape(img_shape)}"
        )
