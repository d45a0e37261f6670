"""One folder per DICOM series, optional NIfTI label beside it (e.g. a TotalSegmentator-style
export)::


    ROOT/
    ├── case_0000/
    │   ├── dicom/*.dcm            the series (any folder directly holding DICOM files is a
    │   │                          series; a series folder named "dicom" belongs to its parent)
    │   └── labels.nii.gz          label: labels|label|segmentation|seg|mask .nii[.gz] in the
    │                              case folder, or <case>[_labels|_label|_segmentation|_seg|
    │                              _mask].nii[.gz] beside the series folder
    └── site_b/patient_7/*.dcm     case site_b__patient_7

    A DICOM file is any file with ``DICM`` after the 128-byte preamble (extension ignored;
    ``DICOMDIR`` and obvious non-DICOM extensions such as ``.nii.gz``/``.png``/``.json`` are
    skipped without opening). The label is aligned to the series' voxel grid through the
    affines (:func:`~anunet_core.io.align_label_to_image`): a label in RAS order beside
    an LPS DICOM series lines up exactly.

"""

from __future__ import annotations

from pathlib import Path

from anunet_core.archives.case import Case
from anunet_core.archives.names import LABEL_NAMES, LABEL_SUFFIXES, first_existing, folder_id, is_dicom_file, walk
from anunet_core.vocabulary import ORGAN_LABEL_VALUES

__all__ = ["HINT", "discover", "label_values"]

HINT = "folders of DICOM files"


def label_values(organ: str) -> frozenset[int]:
    """TotalSegmentator's codes: liver {5}, spleen {1}, kidney {2, 3}."""
    return frozenset(ORGAN_LABEL_VALUES[organ])


def _dicom_label(root: Path, series: Path, case_dir: Path) -> Path | None:
    candidates = [case_dir / f"{name}{ext}" for name in LABEL_NAMES for ext in (".nii.gz", ".nii")]
    if series != root:  # <case>.nii.gz beside the series folder (never outside the root)
        candidates += [
            series.parent / f"{case_dir.name}{suffix}{ext}"
            for suffix in ("", *LABEL_SUFFIXES)
            for ext in (".nii.gz", ".nii")
        ]
    return first_existing(candidates, f"{case_dir}: label")


def discover(root: Path, require_labels: bool) -> list[Case]:
    cases = []
    for folder, _, files in walk(root):
        if not any(is_dicom_file(folder / name) for name in files):
            continue
        case_dir = folder.parent if folder.name.lower() == "dicom" and folder != root else folder
        case_id = folder_id(root, case_dir)
        label = _dicom_label(root, folder, case_dir)
        cases.append(Case(case_id, case_id, "dicom", folder, label, None))
    return cases
