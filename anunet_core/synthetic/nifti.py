"""The NIfTI archive layouts: NIfTI pairs, the Medical Segmentation Decathlon and LiTS.

- :func:`write_nifti_pairs`: ``OUT/<case_id>/image.nii.gz`` + ``labels.nii.gz``
- :func:`write_msd`: ``OUT/imagesTr/<case_id>.nii.gz`` + ``OUT/labelsTr/<case_id>.nii.gz`` +
  ``dataset.json`` (labels: organ = 1, background = 0)
- :func:`write_lits`: ``OUT/volume-N.nii`` + ``OUT/segmentation-N.nii`` (liver 1, lesion 2)

Images are int16 (exact: phantom values are whole numbers within int16; CT in HU), labels
uint8, both ``(I, J, K)`` with the phantom's affine as qform and sform (code 1, units mm).
Every file is written to a temporary name and renamed. Gzip output has no timestamp, so the
same phantom always gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from anunet_core.synthetic.files import write_bytes_atomic
from anunet_core.synthetic.phantom import Phantom
from anunet_core.vocabulary import LITS_LABELS, ORGAN_LABEL_VALUES, TOTALSEG_LABELS, validate_organ

__all__ = ["save_nifti", "write_lits", "write_msd", "write_nifti_pairs"]


def _nifti_bytes(array: np.ndarray, affine: np.ndarray, compress: bool) -> bytes:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    data = img.to_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data


def _image_array(p: Phantom) -> np.ndarray:
    """The image as int16 (exact: phantom values are whole numbers within int16)."""
    return p.image.astype(np.int16)


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` ``(I, J, K)`` with ``affine`` (voxel -> RAS+ mm) to ``path`` (``.nii``
    or ``.nii.gz``, gzipped by the name), atomically. Returns ``path``."""
    name = Path(path).name
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI path must end with .nii or .nii.gz, got {name!r}")
    return write_bytes_atomic(path, _nifti_bytes(array, affine, name.endswith(".gz")))


def write_nifti_pairs(out_dir: str | os.PathLike, phantoms: Sequence[Phantom]) -> list[Path]:
    """``OUT/<case_id>/image.nii.gz`` (int16) + ``labels.nii.gz`` (uint8, all label values).

    Returns the case folders.
    """
    out = Path(out_dir)
    cases = []
    for p in phantoms:
        case = out / p.case_id
        save_nifti(case / "image.nii.gz", _image_array(p), p.affine)
        save_nifti(case / "labels.nii.gz", p.labels, p.affine)
        cases.append(case)
    return cases


def write_msd(out_dir: str | os.PathLike, phantoms: Sequence[Phantom], organ: str) -> list[Path]:
    """Medical Segmentation Decathlon layout for one organ.

    ``OUT/imagesTr/<case_id>.nii.gz`` (int16), ``OUT/labelsTr/<case_id>.nii.gz`` (uint8:
    ``organ`` = 1, everything else 0; kidney = both kidneys) and ``OUT/dataset.json``, which
    lists every image in ``imagesTr`` (so cases added by later calls are listed too).
    Returns the image paths of this call.
    """
    organ = validate_organ(organ)
    out = Path(out_dir)
    images = []
    for p in phantoms:
        img = out / "imagesTr" / f"{p.case_id}.nii.gz"
        lab = out / "labelsTr" / f"{p.case_id}.nii.gz"
        save_nifti(img, _image_array(p), p.affine)
        save_nifti(lab, np.isin(p.labels, ORGAN_LABEL_VALUES[organ]).astype(np.uint8), p.affine)
        images.append(img)
    names = sorted(f.name for f in (out / "imagesTr").glob("*.nii.gz"))
    modalities = sorted({p.modality for p in phantoms}) or ["CT"]
    meta = _msd_dataset(organ, modalities, names)
    write_bytes_atomic(out / "dataset.json", json.dumps(meta, indent=2).encode())
    return images


def _msd_dataset(organ: str, modalities: list[str], names: list[str]) -> dict:
    """The ``dataset.json`` of an MSD task whose ``imagesTr`` holds the files ``names``."""
    return {
        "name": f"Synthetic{organ.capitalize()}",
        "description": f"anunet_core.synthetic phantoms, {organ} labels",
        "reference": "synthetic",
        "licence": "CC0",
        "tensorImageSize": "3D",
        "modality": {"0": "/".join(modalities)},
        "labels": {"0": "background", "1": organ},
        "numTraining": len(names),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names],
        "test": [],
    }


def write_lits(
    out_dir: str | os.PathLike, phantoms: Sequence[Phantom], *, first_index: int = 0
) -> list[Path]:
    """LiTS layout: ``OUT/volume-N.nii`` (int16) + ``OUT/segmentation-N.nii`` (uint8).

    ``N`` = ``first_index`` + the phantom's position in ``phantoms`` (LiTS counts from 0).
    Segmentation (:data:`anunet_core.vocabulary.LITS_LABELS`): liver 1, lesion 2, else 0.
    Returns the volume paths.
    """
    out = Path(out_dir)
    volumes = []
    for n, p in enumerate(phantoms, start=int(first_index)):
        seg = np.zeros(p.labels.shape, dtype=np.uint8)
        seg[p.labels == TOTALSEG_LABELS["liver"]] = LITS_LABELS["liver"]
        seg[p.lesions] = LITS_LABELS["liver_tumor"]
        vol = save_nifti(out / f"volume-{n}.nii", _image_array(p), p.affine)
        save_nifti(out / f"segmentation-{n}.nii", seg, p.affine)
        volumes.append(vol)
    return volumes
