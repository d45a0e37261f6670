"""Plain NIfTI pairs::

    ROOT/
    ├── case_0000/                 folder per case: image|img|ct|mr .nii[.gz]
    │   ├── image.nii.gz           + labels|label|segmentation|seg|mask .nii[.gz]
    │   └── labels.nii.gz          (other NIfTI files and subfolders of a case folder are
    │                              ignored, e.g. TotalSegmentator's per-structure
    │                              segmentations/: such a case has no label)
    ├── liver_07.nii.gz            one folder of pairs: <case>.nii[.gz]
    └── liver_07_seg.nii.gz        + <case>{_labels,_label,_segmentation,_seg,_mask}.nii[.gz]

    A file with a label suffix is never an image: without its image it is skipped (logged).

"""

from __future__ import annotations

import logging
from pathlib import Path

from anunet_core.archives.case import Case
from anunet_core.archives.names import IMAGE_NAMES, LABEL_NAMES, LABEL_SUFFIXES, folder_id, nifti_files, safe_part, walk
from anunet_core.vocabulary import ORGAN_LABEL_VALUES

__all__ = ["HINT", "discover", "label_values"]

log = logging.getLogger(__name__)

HINT = "<case>/image.nii.gz + labels.nii.gz, or <case>.nii.gz + <case>_seg.nii.gz"


def label_values(organ: str) -> frozenset[int]:
    """TotalSegmentator's codes: liver {5}, spleen {1}, kidney {2, 3}."""
    return frozenset(ORGAN_LABEL_VALUES[organ])


def discover(root: Path, require_labels: bool) -> list[Case]:
    cases = []
    label_names = set(LABEL_NAMES)
    for folder, dirs, _ in walk(root):
        niftis = nifti_files(folder)
        if not niftis:
            continue
        lower = {stem.lower(): stem for stem in niftis}
        image_stem = next((lower[n] for n in IMAGE_NAMES if n in lower), None)
        if image_stem is not None:  # a folder per case; its subfolders hold no more cases
            dirs[:] = []
            label_stems = [lower[n] for n in LABEL_NAMES if n in lower]
            if len(label_stems) > 1:
                log.warning("%s: several labels %s; using %s", folder, label_stems, label_stems[0])
            case_id = folder_id(root, folder)
            label = niftis[label_stems[0]] if label_stems else None
            cases.append(Case(case_id, case_id, "pairs", niftis[image_stem], label, None))
            continue
        for stem, path in niftis.items():  # one folder of <case> + <case>_seg pairs
            low = stem.lower()
            if low in label_names:
                log.warning("%s: label without image.nii.gz beside it; skipped", path)
                continue
            suffix = next((s for s in LABEL_SUFFIXES if low.endswith(s)), None)
            if suffix is not None:
                if low[: -len(suffix)] not in lower:
                    log.warning("%s: label without its image; skipped", path)
                continue
            labels = [niftis[lower[low + s]] for s in LABEL_SUFFIXES if low + s in lower]
            if len(labels) > 1:
                log.warning("%s: several labels %s; using %s", path, labels, labels[0])
            if folder == root:
                case_id = safe_part(stem)
            elif stem == folder.name:
                case_id = folder_id(root, folder)
            else:
                case_id = f"{folder_id(root, folder)}__{safe_part(stem)}"
            cases.append(Case(case_id, case_id, "pairs", path, labels[0] if labels else None, None))
    return cases
