"""LiTS (Liver Tumor Segmentation challenge; CT)::

    ROOT/                              volume/segmentation files up to 2 folder levels deep
    ├── Training Batch 1/
    │   ├── volume-0.nii               case lits-0    (image)
    │   ├── segmentation-0.nii         its label      (0 background, 1 liver, 2 tumour)
    │   └── ...
    ├── Training Batch 2/ ...
    └── test-volume-0.nii[.gz]         case lits-test-0 (no label; left out when
                                       require_labels=True)

    A volume is paired with the segmentation of the same number in its own folder, else with
    the only one of that number anywhere in the archive (``volumes/`` + ``segmentations/``).
    Labels: liver = {1, 2} (the tumour lies inside the liver). LiTS labels no other organ:
    asking for spleen or kidney labels raises ArchiveError (images load without labels).

"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

from anunet_core.archives.case import ArchiveError, Case
from anunet_core.archives.names import walk
from anunet_core.vocabulary import LITS_LABELS

__all__ = ["HINT", "discover", "is_present", "label_values"]

log = logging.getLogger(__name__)

HINT = "volume-N.nii[.gz] + segmentation-N.nii[.gz]"
_LITS_RE = re.compile(r"^(test-)?(volume|segmentation)-(\d+)\.nii(\.gz)?$", re.IGNORECASE)


def label_values(organ: str) -> frozenset[int]:
    """liver: {1, 2} (the tumour lies inside the liver); LiTS labels no other organ."""
    if organ != "liver":
        raise ArchiveError(
            f"LiTS labels only the liver (1 liver, 2 tumour): no {organ} labels in a LiTS "
            f"archive (pass label_values to override)"
        )
    return frozenset(LITS_LABELS.values())


def is_present(root: Path) -> bool:
    """A ``volume-N.nii[.gz]`` up to 2 folder levels deep."""
    return bool(_lits_files(root, first_volume_only=True)[0])


def _lits_files(root: Path, first_volume_only: bool = False):
    """``(volumes, segmentations)``: lists of ``((is_test, N), path)``, 2 levels deep."""
    volumes, segmentations = [], []
    for folder, _, files in walk(root, max_depth=2):
        for name in files:
            m = _LITS_RE.match(name)
            if m is None:
                continue
            key = (m.group(1) is not None, m.group(3))
            if m.group(2).lower() == "volume":
                volumes.append((key, folder / name))
                if first_volume_only:
                    return volumes, segmentations
            else:
                segmentations.append((key, folder / name))
    return volumes, segmentations


def discover(root: Path, require_labels: bool) -> list[Case]:
    volumes, segmentations = _lits_files(root)
    seg_by_key: dict[tuple[bool, str], list[Path]] = defaultdict(list)
    for key, path in segmentations:
        seg_by_key[key].append(path)
    used = set()
    cases = []
    for (is_test, number), volume in volumes:
        if is_test and require_labels:
            continue
        candidates = seg_by_key.get((is_test, number), [])
        same_folder = [p for p in candidates if p.parent == volume.parent]
        label = None
        if len(same_folder) == 1:
            label = same_folder[0]
        elif len(same_folder) == 0 and len(candidates) == 1:
            label = candidates[0]
        elif candidates:
            log.warning("%s: ambiguous segmentations %s; no label used", volume, candidates)
        if label is not None:
            used.add(label)
        case_id = f"lits-test-{number}" if is_test else f"lits-{number}"
        cases.append(Case(case_id, case_id, "lits", volume, label, "CT"))
    for _, path in segmentations:
        if path not in used:
            log.warning("%s: segmentation without a volume of the same number; skipped", path)
    return cases
