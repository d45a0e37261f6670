"""Post-processing speed: scipy.ndimage.label against cc3d, side by side on the same masks.

For each grid (512 x 512 x 200 at 0.8 x 0.8 x 2.5 mm and 256 x 256 x 100 at 1.6 x 1.6 x 5 mm,
the same anatomy) and each rule (liver: keep 1; kidney: keep 2), on a predicted-like mask (the
organ as a large smooth blob, plus a few 1-3 mL false positives and 300 scattered specks of
1-27 voxels), it times the whole keep-largest + minimum-volume pass three ways:

- ``scipy``: ``scipy.ndimage.label`` (26-connectivity), then the same size count and selection
  as :func:`anunet_core.postprocessing.postprocess_organ`;
- ``cc3d``: :func:`~anunet_core.postprocessing.postprocess_organ` itself
  (``cc3d.connected_components`` + the size count over the foreground voxels);
- ``largest_k``: ``cc3d.largest_k`` then ``cc3d.dust`` (two labelling passes).

All three results are checked equal. Each time is the median of ``--repeats``. For scale, the
same run also times what the segment job does with that mask anyway: writing it as .nii.gz
(:func:`anunet_core.io.write_mask`) and its statistics
(:func:`anunet_core.statistics.organ_statistics`).

    python benchmarks/bench_postprocess.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cc3d
import numpy as np
from scipy import ndimage

from anunet_core.io import Volume, voxel_volume_ml, write_mask
from anunet_core.postprocessing import PostprocessRule, kept_components, postprocess_organ, rule_for
from anunet_core.statistics import organ_statistics
from benchkit import cpu_name

GRIDS = (((512, 512, 200), (0.8, 0.8, 2.5)), ((256, 256, 100), (1.6, 1.6, 5.0)))


def predicted_mask(shape: tuple[int, int, int], spacing: tuple[float, float, float], organ: str, seed: int = 0) -> np.ndarray:
    """uint8 ``(I, J, K)``: the organ drawn in mm (a liver-sized ellipsoid of about 1.6 L, or two
    kidney-sized ones of about 150 mL each) with a wavy surface, three false positive blobs of
    1-3 mL and 300 specks of 1-27 voxels; the same anatomy on every grid."""
    rng = np.random.default_rng(seed)
    x, y, z = (np.arange(n, dtype=np.float32)[tuple(slice(None) if a == d else None for d in range(3))]
               * s for a, (n, s) in enumerate(zip(shape, spacing)))
    centre = [n * s / 2 for n, s in zip(shape, spacing)]

    def ellipsoid(c, r):
        wave = 0.06 * np.sin(x / 9.0) * np.cos(y / 11.0)  # a surface that is not a quadric
        return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 < 1 + wave

    if organ == "liver":
        mask = ellipsoid([centre[0] - 60, centre[1] + 10, centre[2] + 40], (95, 80, 50))
    else:
        mask = ellipsoid([centre[0] - 70, centre[1] - 40, centre[2]], (28, 35, 60))
        mask |= ellipsoid([centre[0] + 70, centre[1] - 40, centre[2] + 10], (28, 35, 60))
    for _ in range(3):  # false positives of 1-3 mL
        c = [rng.uniform(0.2, 0.8) * n * s for n, s in zip(shape, spacing)]
        mask |= ellipsoid(c, [rng.uniform(6, 9)] * 3)
    mask = mask.astype(np.uint8)
    for _ in range(300):
        corner = [int(rng.integers(0, n - 3)) for n in shape]
        size = rng.integers(1, 4, 3)
        mask[tuple(slice(c, c + w) for c, w in zip(corner, size))] = 1
    return mask


def scipy_postprocess(mask: np.ndarray, rule: PostprocessRule, voxel_ml: float) -> np.ndarray:
    """The same pass as ``postprocess_organ``, labelled by ``scipy.ndimage.label``."""
    inside = mask.view(np.bool_)
    labels, n = ndimage.label(inside, structure=np.ones((3, 3, 3), dtype=bool))
    component_of = labels[inside]
    sizes = np.bincount(component_of, minlength=n + 1)[1:]
    chosen = np.zeros(n + 1, dtype=np.bool_)
    chosen[kept_components(sizes, rule, voxel_ml) + 1] = True
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[inside] = chosen[component_of]
    return out


def largest_k_postprocess(mask: np.ndarray, rule: PostprocessRule, voxel_ml: float) -> np.ndarray:
    """``cc3d.largest_k`` then ``cc3d.dust`` (ties may differ from the rule's; none here)."""
    kept = cc3d.largest_k(mask, rule.keep_components, connectivity=26, binary_image=True)
    voxels = int(np.ceil(rule.min_blob_ml / voxel_ml - 1e-9))
    return (cc3d.dust(kept, voxels, connectivity=26, binary_image=True) != 0).view(np.uint8)


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical CPUs); median of {args.repeats} runs, seconds")
    print(f"{'grid':<12} {'organ':<7} {'components':>10} {'scipy':>7} {'cc3d':>7} {'largest_k':>10} "
          f"{'scipy/cc3d':>10} {'write .nii.gz':>13} {'cc3d/write':>10} {'statistics':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for shape, spacing in GRIDS:
            affine = np.diag([*spacing, 1.0])
            voxel_ml = voxel_volume_ml(affine)
            scan = Volume(np.zeros(shape, dtype=np.float32), affine, "CT", "bench")
            for organ in ("liver", "kidney"):
                mask, rule = predicted_mask(shape, spacing, organ), rule_for(organ)
                t_scipy, by_scipy = median_seconds(lambda: scipy_postprocess(mask, rule, voxel_ml), args.repeats)
                t_cc3d, result = median_seconds(lambda: postprocess_organ(mask, organ, voxel_ml), args.repeats)
                t_largest, by_largest = median_seconds(lambda: largest_k_postprocess(mask, rule, voxel_ml), args.repeats)
                if not (np.array_equal(by_scipy, result.mask) and np.array_equal(by_largest, result.mask)):
                    raise AssertionError(f"{organ} {shape}: the three post-processings differ")
                path = Path(tmp) / f"{organ}.nii.gz"
                t_write, _ = median_seconds(lambda: write_mask(result.mask, scan, path), args.repeats)
                t_stats, _ = median_seconds(
                    lambda: organ_statistics(result.mask, scan.array, affine, organ, "CT"), args.repeats)
                grid = "x".join(map(str, shape))
                print(f"{grid:<12} {organ:<7} {result.components:>10} {t_scipy:>7.3f} {t_cc3d:>7.3f} {t_largest:>10.3f} "
                      f"{t_scipy / t_cc3d:>10.1f} {t_write:>13.3f} {t_cc3d / t_write:>10.2f} {t_stats:>10.3f}")


if __name__ == "__main__":
    main()
