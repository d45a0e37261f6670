"""Medical Segmentation Decathlon, and nnU-Net v2 raw datasets::

    ROOT/                      (or ROOT/Task03_Liver/, up to 2 levels down; several tasks)
    ├── imagesTr/liver_001.nii.gz        case liver_001; nnU-Net: liver_001_0000.nii.gz
    ├── labelsTr/liver_001.nii.gz        its label (1 organ, 2 tumour inside it)
    ├── imagesTs/liver_132.nii.gz        case liver_132, no label (left out when
    │                                    require_labels=True)
    └── dataset.json                     not read

    An image pairs with the label of the same base name. When some training image finds its
    label only without a trailing 4-digit channel suffix (``_0000``), the task uses nnU-Net
    naming: every image (``imagesTs`` too) loses that suffix, and channels other than
    ``_0000`` are skipped (only the first channel is read). Labels: {1, 2} for every organ:
    the MSD task decides which organ is labelled, pick the task that matches ``organ``.

"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from anunet_core.archives.case import Case
from anunet_core.archives.names import child, nifti_files, safe_part, subdirs
from anunet_core.vocabulary import MSD_LABELS

__all__ = ["HINT", "discover", "is_present", "label_values"]

log = logging.getLogger(__name__)

HINT = "imagesTr/*.nii.gz + labelsTr/*.nii.gz"
_CHANNEL_RE = re.compile(r"^(.+)_(\d{4})$")


def label_values(organ: str) -> frozenset[int]:
    """{1, 2} for every organ: the task decides which organ is labelled (and a tumour in it)."""
    return frozenset(MSD_LABELS.values())


def is_present(root: Path) -> bool:
    """``imagesTr`` or ``imagesTs`` in the root or up to 2 levels down."""
    return bool(_msd_task_folders(root))


def _msd_task_folders(root: Path) -> list[Path]:
    """Folders holding ``imagesTr`` or ``imagesTs``: ROOT, or up to 2 levels below it."""
    out = []
    level = [root]
    for _ in range(3):
        children = []
        for folder in level:
            found = subdirs(folder)
            if any(d.name.lower() in ("imagestr", "imagests") for d in found):
                out.append(folder)  # a task folder: its own subfolders are not tasks
            else:
                children += found
        level = children
    return sorted(out)


def _channel(stem: str) -> tuple[str, str] | None:
    """``("liver_001", "0000")`` for an nnU-Net channel file ``liver_001_0000``, else None."""
    m = _CHANNEL_RE.match(stem)
    return (m.group(1), m.group(2)) if m else None


def discover(root: Path, require_labels: bool) -> list[Case]:
    cases = []
    for task in _msd_task_folders(root):
        labels = nifti_files(child(task, "labelsTr"))
        train = nifti_files(child(task, "imagesTr"))
        # nnU-Net naming when some training image finds its label only without the suffix
        suffixed = any(
            stem not in labels and (ch := _channel(stem)) is not None and ch[0] in labels
            for stem in train
        )
        used: set[str] = set()
        splits = [(train, True)]
        if not require_labels:
            splits.append((nifti_files(child(task, "imagesTs")), False))
        for images, labelled in splits:
            for stem, image in images.items():
                base = stem
                if suffixed and not (labelled and stem in labels):
                    ch = _channel(stem)
                    if ch is not None:
                        if ch[1] != "0000":
                            log.debug("%s: extra channel of %s skipped", image, ch[0])
                            continue
                        base = ch[0]
                label = labels.get(base) if labelled else None
                if label is not None:
                    used.add(base)
                case_id = safe_part(base)
                cases.append(Case(case_id, case_id, "msd", image, label, None))
        for stem, path in labels.items():
            if stem not in used:
                log.warning("%s: label without an image in imagesTr; skipped", path)
    return cases
