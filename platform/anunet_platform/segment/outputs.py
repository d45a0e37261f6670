"""What each organ of a run writes, and how a mask says which models made it (pure, no Ray).

One model: ``masks/{case_id}.nii.gz`` is the organ's 0/1 mask and its header names the model
version (as before several organs existed). Several models: it is a label map (each organ's
value is :data:`~anunet_core.vocabulary.ORGAN_MAP_VALUES`'s), its header holds the JSON
:func:`label_map_description` (the values, the organ names and the model versions), the same
labels are in ``OUT/labels.json``, and each organ's 0/1 mask (the label map's voxels of that
organ) lies in ``masks/{organ}/{case_id}.nii.gz`` naming its own model version.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anunet_core.io import read_mask_description, write_json_atomic
from anunet_platform.contracts import LABELS_FILE, organ_mask_path, prediction_path
from anunet_platform.segment.config import SegmentError

__all__ = [
    "OrganOutput",
    "check_labels_file",
    "label_map_description",
    "labels_document",
    "mask_description",
    "masks_made_by",
    "organ_outputs",
    "write_labels_file",
]


@dataclass(frozen=True)
class OrganOutput:
    """One organ's model in a run, as the write stage and resume need it (no weights).

    ``model_version`` is ``models:/{model_name}/{version}`` (the manifest's column);
    ``postprocess`` whether its masks keep only the largest component(s), and why.
    """

    organ: str
    label_value: int
    model_name: str
    version: str
    depth: int
    depth_reason: str
    postprocess: bool
    postprocess_reason: str
    exit_rule: str | None = None  # --depth adaptive: the exit rule's tags as JSON (None: a fixed depth)
    qc_tags: dict[str, str] = field(default_factory=dict)  # the version's qc_* thresholds
    volume_tags: dict[str, str] = field(default_factory=dict)  # the training cases' organ volumes

    @property
    def model_version(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labels_document(organs: Sequence[OrganOutput]) -> dict[str, Any]:
    """``labels.json``: ``{"labels": {"background": 0, organ: value, ...}, "models": {organ: model_version}}``
    (nnU-Net's ``dataset.json`` spelling of a label table)."""
    return {
        "labels": {"background": 0, **{o.organ: o.label_value for o in organs}},
        "models": {o.organ: o.model_version for o in organs},
    }


def label_map_description(organs: Sequence[OrganOutput]) -> str:
    """The label map's header description: :func:`labels_document` as compact JSON."""
    return json.dumps(labels_document(organs), sort_keys=True, separators=(",", ":"))


def mask_description(organs: Sequence[OrganOutput]) -> str:
    """What ``masks/{case_id}.nii.gz`` says of itself: one organ's model version, or the label
    map's description."""
    return organs[0].model_version if len(organs) == 1 else label_map_description(organs)


def masks_made_by(out: Path, case_id: str, organs: Sequence[OrganOutput]) -> bool:
    """Whether the case's mask files are there and say that these ``organs``' models made them
    (an unreadable or foreign mask: False, the case is redone)."""
    paths = [(prediction_path(out, case_id), mask_description(organs))]
    if len(organs) > 1:
        paths += [(organ_mask_path(out, case_id, o.organ), o.model_version) for o in organs]
    for path, expected in paths:
        try:
            if not path.is_file() or read_mask_description(path) != expected:
                return False
        except ValueError:
            return False
    return True


def check_labels_file(out: Path, organs: Sequence[OrganOutput]) -> None:
    """Refuse a run whose organs differ from the label maps ``OUT`` already holds (its
    ``labels.json``): mixing label maps of two organ sets in one folder would mislead every
    reader. :class:`~anunet_platform.segment.config.SegmentError` (one line) naming both sets."""
    path = Path(out) / LABELS_FILE
    if not path.is_file():
        return
    try:
        labels = json.loads(path.read_text())["labels"]
        held = sorted(k for k in labels if k != "background")
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable: this run rewrites it
    wanted = sorted(o.organ for o in organs)
    if len(organs) > 1 and held == wanted:
        return
    raise SegmentError(
        f"{out} holds label maps of {', '.join(held)} ({LABELS_FILE}); this run segments {', '.join(wanted)}: "
        "write to another --out"
    )


def write_labels_file(out: Path, organs: Sequence[OrganOutput]) -> Path | None:
    """``OUT/labels.json`` for a several-model run (atomically); None with one model."""
    if len(organs) < 2:
        return None
    return write_json_atomic(Path(out) / LABELS_FILE, labels_document(organs))


def organ_outputs(selected: Sequence[Any]) -> list[OrganOutput]:
    """:class:`OrganOutput` of each :class:`~anunet_platform.segment.model.SelectedModel`."""
    return [
        OrganOutput(organ=s.organ, label_value=s.label_value, model_name=s.registered.name,
                    version=str(s.registered.version), depth=s.depth, depth_reason=s.choice.reason,
                    postprocess=s.postprocess.apply, postprocess_reason=s.postprocess.reason,
                    exit_rule=json.dumps(s.exit_rule.to_tags(), sort_keys=True) if s.exit_rule else None,
                    qc_tags=dict(s.qc.to_tags()), volume_tags=dict(s.volume_tags))
        for s in selected
    ]
