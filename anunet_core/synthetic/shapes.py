"""Drawing primitives of the phantoms: the body-centred grid, deformed blobs, smooth noise and
the painter that fills the tissue and label maps.

Coordinates are millimetres in the patient's body frame (:class:`Grid`): ``X`` toward the
patient's right, ``Y`` anterior, ``Z`` superior; arrays broadcast to ``(I, J, K)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anunet_core.synthetic.tissues import T_AIR

__all__ = [
    "Blob",
    "Box",
    "Grid",
    "Painter",
    "box_shape",
    "nonempty",
    "rotation",
    "smooth_noise",
    "superellipse",
    "surface_phase",
]

Box = tuple[slice, slice, slice]
"""Index ranges along ``(i, j, k)``: a sub-block of the grid."""


@dataclass(frozen=True)
class Grid:
    """Body-centred coordinates (mm) of the voxel centres, broadcastable to ``(I, J, K)``.

    ``X`` toward the patient's right, ``Y`` anterior, ``Z`` superior (anatomical: the L1/L2
    disc is near ``Z = 0``).
    """

    X: np.ndarray  # (I, 1, 1)
    Y: np.ndarray  # (1, J, 1)
    Z: np.ndarray  # (1, 1, K)
    spacing: tuple[float, float, float]  # mm along (i, j, k)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.X.shape[0], self.Y.shape[1], self.Z.shape[2])

    def box(self, center: Sequence[float], half: Sequence[float]) -> Box:
        """Index ranges of the voxels within ``center +- half`` mm (possibly empty)."""
        out = []
        for axis, c, h in zip((self.X.ravel(), self.Y.ravel(), self.Z.ravel()), center, half):
            lo = int(np.searchsorted(axis, c - h, side="left"))
            hi = int(np.searchsorted(axis, c + h, side="right"))
            out.append(slice(lo, max(lo, hi)))
        return tuple(out)  # type: ignore[return-value]


def nonempty(box: Box) -> bool:
    """True when ``box`` holds at least one voxel."""
    return all(s.stop > s.start for s in box)


def box_shape(box: Box) -> tuple[int, int, int]:
    """The ``(I, J, K)`` shape of the block ``box`` selects."""
    return tuple(s.stop - s.start for s in box)  # type: ignore[return-value]


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians); columns are the local axes in the world."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def surface_phase(ux, uy, uz, kx, ky, kz, ph) -> np.ndarray:
    """``k . u + phase`` of one surface mode, in float32."""
    f32 = np.float32
    return f32(kx) * ux + f32(ky) * uy + f32(kz) * uz + f32(ph)


@dataclass(frozen=True)
class Blob:
    """A deformed superellipsoid: ``f(u) < 1`` inside, ``u`` = local coordinates / radii.

    ``f`` is the superellipsoid norm of ``u`` (exponent ``power``) after bending
    (``u_y -= bend * u_x**2``) minus a sum of random low-frequency cosine modes, so the surface
    is smooth but not an ellipsoid. ``center`` and ``radii`` are in mm.
    """

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    rotation: np.ndarray  # (3, 3): columns are the local axes in the world
    power: float = 2.0
    bend: float = 0.0
    modes: np.ndarray | None = None  # (M, 5): kx, ky, kz, phase, amplitude

    @staticmethod
    def random_modes(rng: np.random.Generator, amplitude: float, n: int = 6) -> np.ndarray:
        """``(n, 5)`` random surface modes of total amplitude ``amplitude`` (fraction of radius)."""
        k = rng.normal(0.0, 1.6, size=(n, 3))
        phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
        amp = np.full((n, 1), amplitude / np.sqrt(n))
        return np.hstack([k, phase, amp])

    def half_extent(self) -> np.ndarray:
        """Half the side of a cube (mm) around ``center`` that holds the whole blob."""
        reach = max(self.radii) * (1.0 + abs(self.bend)) * 1.3
        return np.full(3, reach)

    def field(self, grid: Grid, box: Box) -> tuple[np.ndarray, ...]:
        """``(f, ux, uy, uz)`` on ``box`` (float32 arrays of the box's shape)."""
        dx = (grid.X[box[0]] - self.center[0]).astype(np.float32)
        dy = (grid.Y[:, box[1]] - self.center[1]).astype(np.float32)
        dz = (grid.Z[:, :, box[2]] - self.center[2]).astype(np.float32)
        r = self.rotation.astype(np.float32)
        u = [(dx * r[0, a] + dy * r[1, a] + dz * r[2, a]) / np.float32(self.radii[a])
             for a in range(3)]
        ux, uy, uz = (np.broadcast_to(v, box_shape(box)) for v in u)
        if self.bend:
            uy = uy - np.float32(self.bend) * ux * ux
        if self.power == 2.0:
            f = np.sqrt(ux * ux + uy * uy + uz * uz)
        else:
            p = np.float32(self.power)
            f = (np.abs(ux) ** p + np.abs(uy) ** p + np.abs(uz) ** p) ** (1 / p)
        if self.modes is not None:
            for kx, ky, kz, ph, amp in self.modes:
                f = f - np.float32(amp) * np.cos(surface_phase(ux, uy, uz, kx, ky, kz, ph))
        return f.astype(np.float32, copy=False), ux, uy, uz

    def mask(self, grid: Grid) -> np.ndarray:
        """Bool ``(I, J, K)``: the voxels inside the blob."""
        full = np.zeros(grid.shape, dtype=bool)
        box = grid.box(self.center, self.half_extent())
        if nonempty(box):
            full[box] = self.field(grid, box)[0] < 1.0
        return full


def _upsample(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` to ``n_out`` samples along ``axis`` (end points aligned)."""
    n_in = a.shape[axis]
    x = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(np.floor(x).astype(int), n_in - 2)
    shape = [1] * a.ndim
    shape[axis] = n_out
    w = (x - i0).astype(np.float32).reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i0 + 1, axis=axis) * w


def smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], scale_mm: float
) -> np.ndarray:
    """Zero-mean, unit-sd float32 noise of ``shape`` with features of about ``scale_mm`` mm.

    White noise smoothed with a Gaussian of sd scale / 2; for large features drawn on a coarse
    grid (cell = scale / 2), smoothed there and interpolated up (separable linear
    interpolation): fast. ``spacing`` is the voxel size in mm.
    """
    step = scale_mm / 2.0
    coarse = [max(2, int(np.ceil(n * s / step)) + 1) for n, s in zip(shape, spacing)]
    if np.prod(coarse) * 8 > np.prod(shape):  # features near the voxel size: smooth in place
        noise = rng.standard_normal(tuple(shape), dtype=np.float32)
        out = ndimage.gaussian_filter(noise, [step / s for s in spacing])
    else:
        out = ndimage.gaussian_filter(
            rng.standard_normal(coarse, dtype=np.float32), 1.0, mode="wrap")
        for axis in range(3):
            out = _upsample(out, shape[axis], axis)
    out -= out.mean()
    return out / np.float32(max(float(out.std()), 1e-12))


def superellipse(x: np.ndarray, y: np.ndarray, p: float) -> np.ndarray:
    """The superellipse norm ``(|x|^p + |y|^p)^(1/p)``: ``< 1`` inside."""
    return (np.abs(x) ** p + np.abs(y) ** p) ** (1.0 / p)


class Painter:
    """Paints structures into a tissue map and a label map, both uint8 ``(I, J, K)`` (later
    paint wins)."""

    def __init__(self, shape: tuple[int, int, int]):
        self.tissue = np.full(shape, T_AIR, dtype=np.uint8)
        self.labels = np.zeros(shape, dtype=np.uint8)

    def __call__(self, mask: np.ndarray, tissue: int, label: int = 0) -> None:
        """Paint ``mask`` (bool ``(I, J, K)``, or ``(I, J)`` for every slice)."""
        if mask.ndim == 2:
            self.tissue[mask, :] = tissue
            self.labels[mask, :] = label
        else:
            self.tissue[mask] = tissue
            self.labels[mask] = label
