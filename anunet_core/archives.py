"""Find the cases of a scan archive, in every layout we ingest, and load one case.

Used by the ingest job (training data: labels required) and by the nightly segmentation job
(labels not needed). Discovery (:func:`detect_layout`, :func:`discover_cases`) looks only at
names and cheap headers (at most 132 bytes of a file, to recognise DICOM): it never reads
pixels, so it is fast on big archives, and a corrupt file is *not* found here. It fails in
:func:`load_case` with a one-line error naming the file (:class:`ArchiveError`,
:class:`~anunet_core.volumes.VolumeReadError` or
:class:`~anunet_core.volumes.LabelMismatchError`, all ``ValueError``), which the caller records
as that case's failure while the other cases go on.

Layouts (``LAYOUTS``) and how each is found
===========================================

Hidden entries (names starting with ``.``, e.g. macOS ``._*`` resource forks and
``.DS_Store``, half-written ``.tmp`` files) and ``__MACOSX`` folders are ignored everywhere.
Name matching of the fixed file and folder names below is case-insensitive.

``lits`` (LiTS, Liver Tumor Segmentation challenge; CT)::

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

``chaos`` (CHAOS challenge, MR part)::

    ROOT/  (the folder holding MR/, the MR folder itself, or the folder above that)
    └── MR/
        └── 1/                                     patient "1" -> patient_id chaos-1
            ├── T2SPIR/
            │   ├── DICOM_anon/IMG-0002-00001.dcm  case chaos-1-t2spir (one series)
            │   └── Ground/IMG-0002-00001.png      one 8-bit PNG per DICOM file
            └── T1DUAL/
                ├── DICOM_anon/InPhase/*.dcm       case chaos-1-t1in
                ├── DICOM_anon/OutPhase/*.dcm      case chaos-1-t1out
                └── Ground/*.png                   shared by InPhase and OutPhase

    The i-th PNG (sorted by file name) belongs to the i-th DICOM file (sorted by file name);
    each DICOM file's header says where its slice lands in the volume (position along the
    slice normal, the rule of :func:`~anunet_core.volumes.read_dicom_series`), and the PNG's
    pixel ``(row, col)`` is the slice's ``pixel_array[row, col]``, i.e. ``label[:, :, k] =
    png.T``. PNG grey values (CHAOS README ranges) are mapped to TotalSegmentator's codes,
    so organs map the same way as in ``dicom``/``pairs``: liver 55-70 -> 5, right kidney
    110-135 -> 2, left kidney 175-200 -> 3, spleen 240-255 -> 1, anything else -> 0.
    CHAOS's CT part (``CT/<id>/DICOM_anon`` + liver-only ``Ground``) is not supported.

``msd`` (Medical Segmentation Decathlon, and nnU-Net v2 raw datasets)::

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

``dicom`` (one folder per DICOM series, optional NIfTI label beside it; e.g. a
TotalSegmentator-style export)::

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
    affines (:func:`~anunet_core.volumes.align_label_to_image`): a label in RAS order beside
    an LPS DICOM series lines up exactly.

``pairs`` (plain NIfTI pairs)::

    ROOT/
    ├── case_0000/                 folder per case: image|img|ct|mr .nii[.gz]
    │   ├── image.nii.gz           + labels|label|segmentation|seg|mask .nii[.gz]
    │   └── labels.nii.gz          (other NIfTI files and subfolders of a case folder are
    │                              ignored, e.g. TotalSegmentator's per-structure
    │                              segmentations/: such a case has no label)
    ├── liver_07.nii.gz            one folder of pairs: <case>.nii[.gz]
    └── liver_07_seg.nii.gz        + <case>{_labels,_label,_segmentation,_seg,_mask}.nii[.gz]

    A file with a label suffix is never an image: without its image it is skipped (logged).

Detection order (:func:`detect_layout`): chaos (``MR/<id>/T2SPIR`` or ``T1DUAL``), msd
(``imagesTr``/``imagesTs`` in the root or up to 2 levels down), lits (``volume-N.nii*`` or
``test-volume-N.nii*`` up to 2 levels deep), dicom (any DICOM file anywhere), pairs (any
NIfTI file anywhere). So an archive of NIfTI pairs with one stray DICOM file is detected as
``dicom``: pass ``layout="pairs"``.

Label values (:func:`default_label_values`; ``label_values=`` overrides them in every layout)
=============================================================================================

=========  =============  =============  =============
layout     liver          spleen         kidney
=========  =============  =============  =============
lits       {1, 2}         ArchiveError   ArchiveError
msd        {1, 2}         {1, 2}         {1, 2}
chaos      {5}            {1}            {2, 3}
dicom      {5}            {1}            {2, 3}
pairs      {5}            {1}            {2, 3}
=========  =============  =============  =============

(dicom and pairs use TotalSegmentator's codes: 1 spleen, 2 right kidney, 3 left kidney,
5 liver; the paper's kidney is both kidneys.)

Case ids (``Case.case_id``)
===========================

Only file and folder names, never DICOM tags (patient name/ID): lits ``lits-<N>`` and
``lits-test-<N>``; chaos ``chaos-<id>-t2spir|t1in|t1out`` (patient ``chaos-<id>``); msd the
image's base name (``liver_001``); dicom and pairs the case folder's path below the root with
``__`` between folders (``case_0000``, ``site_b__patient_7``; the root's own name when the
root is the case), flat pairs ``<case>`` (prefixed ``<folder>__`` below the root). Ids depend
only on the case's own path, never on other cases, so they are stable as an archive grows.
Filesystem-safe: characters other than ``A-Z a-z 0-9 . _ -`` become ``_`` and such a name gets
``-<8 hex>`` of its original spelling appended; ids that still collide (case-insensitively,
for macOS/Windows output folders) get ``-<8 hex>`` of their image path. ``patient_id`` (the
key of patient-level splits) is the case id, except CHAOS, whose series of one patient share
``chaos-<id>``.

``require_labels``
==================

Discovery never drops a case silently. With ``require_labels=True`` only cases that are
unlabelled *by design* are left out (LiTS ``test-volume-N``, MSD ``imagesTs``); every other
case is returned, with ``label=None`` when its label file is missing: the caller decides
(ingest lists it as an error).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from anunet_core.preprocessing import label_to_mask, validate_organ
from anunet_core.volumes import (
    MODALITIES,
    LabelMismatchError,
    Volume,
    VolumeReadError,
    _is_image_sop_class,
    align_label_to_image,
    read_dicom_series,
    read_label_nifti,
    read_nifti,
)

__all__ = [
    "CHAOS_GREY_RANGES",
    "IMAGE_NAMES",
    "LABEL_NAMES",
    "LABEL_SUFFIXES",
    "LAYOUTS",
    "ArchiveError",
    "Case",
    "case_checksum",
    "default_label_values",
    "detect_layout",
    "discover_cases",
    "load_case",
    "read_chaos_labels",
    "source_files",
]

log = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("lits", "chaos", "msd", "dicom", "pairs")
_DETECTION_ORDER: tuple[str, ...] = ("chaos", "msd", "lits", "dicom", "pairs")

#: pairs: base names (without .nii/.nii.gz) of the image in a folder-per-case archive.
IMAGE_NAMES: tuple[str, ...] = ("image", "img", "ct", "mr")
#: pairs and dicom: base names of the label file in a case folder, in order of preference.
LABEL_NAMES: tuple[str, ...] = ("labels", "label", "segmentation", "seg", "mask")
#: pairs (``<case><suffix>.nii.gz``) and dicom (``<case><suffix>.nii.gz`` beside the series).
LABEL_SUFFIXES: tuple[str, ...] = ("_labels", "_label", "_segmentation", "_seg", "_mask")

#: CHAOS ground-truth PNG grey ranges (inclusive) -> TotalSegmentator label codes.
CHAOS_GREY_RANGES: tuple[tuple[int, int, int], ...] = (
    (55, 70, 5),  # liver
    (110, 135, 2),  # right kidney
    (175, 200, 3),  # left kidney
    (240, 255, 1),  # spleen
)

_TOTALSEG_VALUES: dict[str, frozenset[int]] = {
    "liver": frozenset({5}),
    "spleen": frozenset({1}),
    "kidney": frozenset({2, 3}),
}
_LITS_LIVER = frozenset({1, 2})
_MSD_VALUES = frozenset({1, 2})

_LAYOUT_HINTS = {
    "lits": "volume-N.nii[.gz] + segmentation-N.nii[.gz]",
    "chaos": "MR/<id>/T2SPIR|T1DUAL/DICOM_anon + Ground/*.png",
    "msd": "imagesTr/*.nii.gz + labelsTr/*.nii.gz",
    "dicom": "folders of DICOM files",
    "pairs": "<case>/image.nii.gz + labels.nii.gz, or <case>.nii.gz + <case>_seg.nii.gz",
}

_SKIP_DIRS = frozenset({"__macosx"})
_NIFTI_EXTS = (".nii.gz", ".nii")
# Files never opened while looking for DICOM (cheap: no open() on big NIfTI/PNG archives).
_NOT_DICOM_EXTS = (
    ".nii", ".nii.gz", ".gz", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".json",
    ".txt", ".csv", ".tsv", ".md", ".html", ".xml", ".pdf", ".zip", ".tar", ".tgz", ".py",
    ".mha", ".mhd", ".nrrd", ".npy", ".npz", ".parquet", ".pkl", ".pt", ".pth",
)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_ID_CHARS = 120
_LITS_RE = re.compile(r"^(test-)?(volume|segmentation)-(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_CHANNEL_RE = re.compile(r"^(.+)_(\d{4})$")
_CHUNK_BYTES = 1 << 20


class ArchiveError(ValueError):
    """An archive or a case cannot be used as asked; one line naming the folder or file."""


# ----------------------------------------------------------------------------------------------
# Case
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One scan of an archive (and its label), as found by :func:`discover_cases`.

    Attributes:
        case_id: unique in the archive (case-insensitively), filesystem-safe, made from file
            and folder names only (see the module docstring).
        patient_id: grouping key for patient-level splits (CHAOS: ``chaos-<id>`` shared by a
            patient's series; elsewhere the case id).
        layout: one of :data:`LAYOUTS`.
        image: a NIfTI file, or a folder holding one DICOM series.
        label: a NIfTI file, or (chaos) the ``Ground`` folder of PNGs; ``None`` when absent.
        modality: ``"CT"`` (lits) / ``"MR"`` (chaos) when the layout implies it, else None.

    Picklable; :meth:`to_dict` / :meth:`from_dict` give plain strings for table rows.
    """

    case_id: str
    patient_id: str
    layout: str
    image: Path
    label: Path | None = None
    modality: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.case_id, str) or not self.case_id:
            raise ArchiveError(f"Case.case_id must be a non-empty string, got {self.case_id!r}")
        if not isinstance(self.patient_id, str) or not self.patient_id:
            raise ArchiveError(
                f"Case.patient_id must be a non-empty string, got {self.patient_id!r}"
            )
        if self.layout not in LAYOUTS:
            raise ArchiveError(f"Case.layout must be one of {LAYOUTS}, got {self.layout!r}")
        object.__setattr__(self, "image", Path(self.image))
        if self.label is not None:
            object.__setattr__(self, "label", Path(self.label))
        if self.modality is not None:
            mod = str(self.modality).strip().upper()
            if mod not in MODALITIES:
                raise ArchiveError(f"Case.modality must be CT, MR or None, got {self.modality!r}")
            object.__setattr__(self, "modality", mod)

    def to_dict(self) -> dict[str, str | None]:
        """Plain strings (paths as ``str``), e.g. for a Ray Data / Parquet row."""
        return {
            "case_id": self.case_id,
            "patient_id": self.patient_id,
            "layout": self.layout,
            "image": str(self.image),
            "label": None if self.label is None else str(self.label),
            "modality": self.modality,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Case:
        """Inverse of :meth:`to_dict`."""
        return cls(
            case_id=data["case_id"],
            patient_id=data["patient_id"],
            layout=data["layout"],
            image=Path(data["image"]),
            label=None if data.get("label") in (None, "") else Path(data["label"]),
            modality=data.get("modality") or None,
        )


# ----------------------------------------------------------------------------------------------
# Small helpers: names, walking, DICOM sniffing, ids
# ----------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SKIP_DIRS


def _nifti_stem(name: str) -> str | None:
    low = name.lower()
    for ext in _NIFTI_EXTS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(os.path.abspath(os.fspath(root)))  # absolute, symlinks kept (names stay)
    if not path.exists():
        raise ArchiveError(f"{path}: no such archive folder")
    if not path.is_dir():
        raise ArchiveError(f"{path}: not a folder (an archive is a folder of scans)")
    return path


def _check_layout(layout: str, allow_auto: bool) -> str:
    name = str(layout).strip().lower()
    if name == "auto" and allow_auto:
        return name
    if name not in LAYOUTS:
        choices = ("auto",) + LAYOUTS if allow_auto else LAYOUTS
        raise ArchiveError(f"unknown archive layout {layout!r}; choose one of {', '.join(choices)}")
    return name


def _organ(organ: str) -> str:
    try:
        return validate_organ(organ)
    except ValueError as exc:
        raise ArchiveError(_one_line(exc)) from exc


def _walk(root: Path, max_depth: int | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``(folder, subfolder names, file names)`` top-down, sorted, hidden entries left out.

    Follows symbolic links to folders, each real folder once (no loops).
    """
    seen: set[str] = set()

    def onerror(exc: OSError) -> None:
        log.warning("cannot list %s: %s", getattr(exc, "filename", "?"), _one_line(exc))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        folder = Path(dirpath)
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        depth = len(folder.relative_to(root).parts)
        if max_depth is not None and depth >= max_depth:
            dirnames[:] = []
        else:
            dirnames[:] = sorted(n for n in dirnames if not _hidden(n))
        yield folder, dirnames, sorted(n for n in filenames if not _hidden(n))


def _subdirs(folder: Path) -> list[Path]:
    """The visible subfolders of ``folder``, sorted (scandir: no stat per plain file)."""
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if not _hidden(e.name) and e.is_dir()]
    except OSError:
        return []
    return [folder / name for name in sorted(names)]


def _child(folder: Path, name: str) -> Path:
    """``folder / name``, matching an existing entry case-insensitively."""
    exact = folder / name
    if exact.exists():
        return exact
    low = name.lower()
    try:
        for entry in folder.iterdir():
            if entry.name.lower() == low:
                return entry
    except OSError:
        pass
    return exact


def _is_dicom_file(path: Path) -> bool:
    """True when ``path`` has ``DICM`` after the 128-byte preamble (reads 132 bytes)."""
    low = path.name.lower()
    if low == "dicomdir" or low.endswith(_NOT_DICOM_EXTS):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:  # a folder, a broken link, no permission
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (not hidden, not DICOMDIR), sorted by path."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if not _hidden(p.name) and p.is_file() and _is_dicom_file(p)]


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _safe_part(raw: str) -> str:
    """A filesystem-safe spelling of one name; changed names get a hash of the original."""
    safe = _UNSAFE_CHARS.sub("_", raw).lstrip(".-").rstrip(".")
    if not safe:
        safe = "case"
    if safe != raw:
        safe = f"{safe}-{_short_hash(raw)}"
    return safe


def _folder_id(root: Path, folder: Path) -> str:
    """Case id of a case folder: its path below the root joined by ``__`` (root: its name)."""
    if folder == root:
        return _safe_part(root.name or "archive")
    return "__".join(_safe_part(part) for part in folder.relative_to(root).parts)


def _finish(root: Path, cases: list[Case]) -> list[Case]:
    """Cap id lengths, make ids unique (case-insensitively), sort by case id."""
    out: list[Case] = []
    for c in cases:
        if len(c.case_id) > _MAX_ID_CHARS:
            new = f"{c.case_id[: _MAX_ID_CHARS - 9]}-{_short_hash(c.case_id)}"
            c = _renamed(c, new)
        out.append(c)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(out):
        groups[c.case_id.lower()].append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        for i in members:
            c = out[i]
            rel = os.path.relpath(c.image, root)
            new = f"{c.case_id}-{_short_hash(rel)}"
            log.warning(
                "case id %s is not unique in %s: %s is called %s", c.case_id, root, rel, new
            )
            out[i] = _renamed(c, new)
    return sorted(out, key=lambda c: c.case_id)


def _renamed(case: Case, new_id: str) -> Case:
    patient = new_id if case.patient_id == case.case_id else case.patient_id
    return Case(new_id, patient, case.layout, case.image, case.label, case.modality)


def _first_existing(paths: Iterable[Path], what: str) -> Path | None:
    found = [p for p in paths if p.is_file()]
    if len(found) > 1:
        log.warning("%s: several candidates %s; using %s", what, [p.name for p in found], found[0])
    return found[0] if found else None


# ----------------------------------------------------------------------------------------------
# Layout markers (detection) and discovery per layout
# ----------------------------------------------------------------------------------------------


def _is_chaos_patient(folder: Path) -> bool:
    names = {d.name.upper() for d in _subdirs(folder)}
    return "T2SPIR" in names or "T1DUAL" in names


def _chaos_mr_folders(root: Path) -> list[Path]:
    """Folders whose subfolders are CHAOS patients: ROOT itself, ROOT/MR or ROOT/*/MR."""
    level1 = _subdirs(root)
    candidates = [root] + [d for d in level1 if d.name.upper() == "MR"]
    for d in level1:
        if d.name.upper() != "MR":
            candidates += [g for g in _subdirs(d) if g.name.upper() == "MR"]
    out, seen = [], set()
    for folder in candidates:
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        if any(_is_chaos_patient(p) for p in _subdirs(folder)):
            out.append(folder)
    return out


def _msd_task_folders(root: Path) -> list[Path]:
    """Folders holding ``imagesTr`` or ``imagesTs``: ROOT, or up to 2 levels below it."""
    out = []
    level = [root]
    for _ in range(3):
        children = []
        for folder in level:
            subdirs = _subdirs(folder)
            if any(d.name.lower() in ("imagestr", "imagests") for d in subdirs):
                out.append(folder)  # a task folder: its own subfolders are not tasks
            else:
                children += subdirs
        level = children
    return sorted(out)


def _lits_files(root: Path, first_volume_only: bool = False):
    """``(volumes, segmentations)``: lists of ``((is_test, N), path)``, 2 levels deep."""
    volumes, segmentations = [], []
    for folder, _, files in _walk(root, max_depth=2):
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


def _discover_lits(root: Path, require_labels: bool) -> list[Case]:
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


def _discover_chaos(root: Path, require_labels: bool) -> list[Case]:
    cases = []
    for mr in _chaos_mr_folders(root):
        for patient_dir in _subdirs(mr):
            if not _is_chaos_patient(patient_dir):
                continue
            patient = f"chaos-{_safe_part(patient_dir.name)}"
            t2 = _child(patient_dir, "T2SPIR")
            if t2.is_dir():
                ground = _child(t2, "Ground")
                cases.append(
                    Case(
                        f"{patient}-t2spir",
                        patient,
                        "chaos",
                        _child(t2, "DICOM_anon"),
                        ground if ground.is_dir() else None,
                        "MR",
                    )
                )
            t1 = _child(patient_dir, "T1DUAL")
            if t1.is_dir():
                ground = _child(t1, "Ground")
                dicom = _child(t1, "DICOM_anon")
                for phase, tag in (("InPhase", "t1in"), ("OutPhase", "t1out")):
                    cases.append(
                        Case(
                            f"{patient}-{tag}",
                            patient,
                            "chaos",
                            _child(dicom, phase),
                            ground if ground.is_dir() else None,
                            "MR",
                        )
                    )
    return cases


def _nifti_files(folder: Path) -> dict[str, Path]:
    """``{base name: path}`` of the NIfTI files directly in ``folder`` (.nii.gz preferred)."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if _hidden(path.name) or not path.is_file():
            continue
        stem = _nifti_stem(path.name)
        if stem is None:
            continue
        if stem in out:
            keep = out[stem] if out[stem].name.lower().endswith(".gz") else path
            log.warning("%s: both .nii and .nii.gz for %s; using %s", folder, stem, keep.name)
            out[stem] = keep
        else:
            out[stem] = path
    return out


def _channel(stem: str) -> tuple[str, str] | None:
    """``("liver_001", "0000")`` for an nnU-Net channel file ``liver_001_0000``, else None."""
    m = _CHANNEL_RE.match(stem)
    return (m.group(1), m.group(2)) if m else None


def _discover_msd(root: Path, require_labels: bool) -> list[Case]:
    cases = []
    for task in _msd_task_folders(root):
        labels = _nifti_files(_child(task, "labelsTr"))
        train = _nifti_files(_child(task, "imagesTr"))
        # nnU-Net naming when some training image finds its label only without the suffix
        suffixed = any(
            stem not in labels and (ch := _channel(stem)) is not None and ch[0] in labels
            for stem in train
        )
        used: set[str] = set()
        splits = [(train, True)]
        if not require_labels:
            splits.append((_nifti_files(_child(task, "imagesTs")), False))
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
                case_id = _safe_part(base)
                cases.append(Case(case_id, case_id, "msd", image, label, None))
        for stem, path in labels.items():
            if stem not in used:
                log.warning("%s: label without an image in imagesTr; skipped", path)
    return cases


def _dicom_label(root: Path, series: Path, case_dir: Path) -> Path | None:
    candidates = [case_dir / f"{name}{ext}" for name in LABEL_NAMES for ext in (".nii.gz", ".nii")]
    if series != root:  # <case>.nii.gz beside the series folder (never outside the root)
        candidates += [
            series.parent / f"{case_dir.name}{suffix}{ext}"
            for suffix in ("", *LABEL_SUFFIXES)
            for ext in (".nii.gz", ".nii")
        ]
    return _first_existing(candidates, f"{case_dir}: label")


def _discover_dicom(root: Path, require_labels: bool) -> list[Case]:
    cases = []
    for folder, _, files in _walk(root):
        if not any(_is_dicom_file(folder / name) for name in files):
            continue
        case_dir = folder.parent if folder.name.lower() == "dicom" and folder != root else folder
        case_id = _folder_id(root, case_dir)
        label = _dicom_label(root, folder, case_dir)
        cases.append(Case(case_id, case_id, "dicom", folder, label, None))
    return cases


def _discover_pairs(root: Path, require_labels: bool) -> list[Case]:
    cases = []
    label_names = set(LABEL_NAMES)
    for folder, dirs, _ in _walk(root):
        niftis = _nifti_files(folder)
        if not niftis:
            continue
        lower = {stem.lower(): stem for stem in niftis}
        image_stem = next((lower[n] for n in IMAGE_NAMES if n in lower), None)
        if image_stem is not None:  # a folder per case; its subfolders hold no more cases
            dirs[:] = []
            label_stems = [lower[n] for n in LABEL_NAMES if n in lower]
            if len(label_stems) > 1:
                log.warning("%s: several labels %s; using %s", folder, label_stems, label_stems[0])
            case_id = _folder_id(root, folder)
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
                case_id = _safe_part(stem)
            elif stem == folder.name:
                case_id = _folder_id(root, folder)
            else:
                case_id = f"{_folder_id(root, folder)}__{_safe_part(stem)}"
            cases.append(Case(case_id, case_id, "pairs", path, labels[0] if labels else None, None))
    return cases


_DISCOVER = {
    "lits": _discover_lits,
    "chaos": _discover_chaos,
    "msd": _discover_msd,
    "dicom": _discover_dicom,
    "pairs": _discover_pairs,
}


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of the archive at ``root`` (one of :data:`LAYOUTS`), from names only.

    Markers, tried in this order: chaos (``MR/<id>/T2SPIR`` or ``T1DUAL``, ``MR`` being the
    root, ``ROOT/MR`` or ``ROOT/*/MR``), msd (``imagesTr``/``imagesTs`` in the root or up to 2
    levels down), lits (``volume-N.nii[.gz]`` up to 2 levels deep), dicom (a file with the DICOM
    preamble anywhere: 132 bytes read per candidate file, stopping at the first), pairs (any
    NIfTI file). Nothing recognisable (or an empty folder) raises :class:`ArchiveError`.
    """
    root = _check_root(root)
    if _chaos_mr_folders(root):
        return "chaos"
    if _msd_task_folders(root):
        return "msd"
    if _lits_files(root, first_volume_only=True)[0]:
        return "lits"
    has_nifti = False
    n_files = 0
    for folder, _, files in _walk(root):
        for name in files:
            n_files += 1
            if _nifti_stem(name) is not None:
                has_nifti = True
            elif _is_dicom_file(folder / name):
                return "dicom"
    if has_nifti:
        return "pairs"
    what = "it is empty" if n_files == 0 else f"none of its {n_files} files is a scan"
    raise ArchiveError(
        f"no cases found in {root} ({what}); tried layouts "
        + "; ".join(f"{name}: {_LAYOUT_HINTS[name]}" for name in _DETECTION_ORDER)
    )


def discover_cases(
    root: str | os.PathLike, layout: str = "auto", require_labels: bool = False
) -> list[Case]:
    """The cases of the archive at ``root``, sorted by ``case_id``.

    Args:
        root: the archive's folder.
        layout: ``"auto"`` (:func:`detect_layout`) or one of :data:`LAYOUTS` to force it;
            anything else raises :class:`ArchiveError` listing the layouts.
        require_labels: leave out the cases that are unlabelled by design (LiTS
            ``test-volume-N``, MSD ``imagesTs``). Nothing else is dropped: a case whose label
            file is missing is returned with ``label=None`` and the caller reports it.

    Only names and cheap headers are read: corrupt files are found by :func:`load_case`.
    No case at all raises :class:`ArchiveError` (``"no cases found in <root> ..."``).
    """
    layout = _check_layout(layout, allow_auto=True)
    root = _check_root(root)
    if layout == "auto":
        layout = detect_layout(root)
    cases = _DISCOVER[layout](root, bool(require_labels))
    if not cases:
        raise ArchiveError(
            f"no cases found in {root} for layout {layout!r} (expected {_LAYOUT_HINTS[layout]})"
        )
    return _finish(root, cases)


# ----------------------------------------------------------------------------------------------
# Label values and loading
# ----------------------------------------------------------------------------------------------


def default_label_values(layout: str, organ: str) -> frozenset[int]:
    """The label values that make up ``organ`` in ``layout``'s label files.

    lits: liver {1, 2} (tumour inside the liver), other organs raise :class:`ArchiveError`
    (LiTS labels only the liver); msd: {1, 2} (the task's organ and a tumour inside it);
    chaos (after PNG decoding), dicom, pairs: TotalSegmentator's codes, liver {5}, spleen {1},
    kidney {2, 3} (right + left).
    """
    layout = _check_layout(layout, allow_auto=False)
    organ = _organ(organ)
    if layout == "lits":
        if organ != "liver":
            raise ArchiveError(
                f"LiTS labels only the liver (1 liver, 2 tumour): no {organ} labels in a LiTS "
                f"archive (pass label_values to override)"
            )
        return _LITS_LIVER
    if layout == "msd":
        return _MSD_VALUES
    return _TOTALSEG_VALUES[organ]


def _label_values(values: Iterable[int] | int) -> frozenset[int]:
    if isinstance(values, (str, bytes)):
        raise ArchiveError(f"label_values must be integers, got the string {values!r}")
    if isinstance(values, (int, np.integer)):
        values = [values]
    out = set()
    try:
        for v in values:
            if isinstance(v, (bool, np.bool_)) or int(v) != v:
                raise ValueError
            out.add(int(v))
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"label_values must be integers, got {values!r}") from exc
    if not out:
        raise ArchiveError("label_values must name at least one label value")
    return frozenset(out)


def _resolve_modality(case: Case, modality: str | None) -> str | None:
    if modality is None:
        return case.modality
    mod = str(modality).strip().upper()
    if mod not in MODALITIES:
        raise ArchiveError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if case.modality is not None and case.modality != mod:
        raise ArchiveError(
            f"{case.image}: a {case.layout} case holds {case.modality} scans, got modality={mod!r}"
        )
    return mod


def _check_dicom_modality(folder: Path, modality: str) -> None:
    """An explicit modality must not contradict the series' own Modality tag (CT/MR)."""
    for path in _dicom_files(folder)[:1]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # unreadable: read_dicom_series reports it with the reason
            return
        tag = str(ds.get("Modality", "") or "").strip().upper()
        if tag in MODALITIES and tag != modality:
            raise ArchiveError(
                f"{path}: DICOM Modality is {tag}, but modality={modality!r} was asked"
            )


def load_case(
    case: Case,
    organ: str,
    modality: str | None = None,
    label_values: Iterable[int] | None = None,
    with_label: bool = True,
) -> tuple[Volume, np.ndarray | None]:
    """Read a case's image and its binary ``organ`` mask on the image's voxel grid.

    Args:
        case: from :func:`discover_cases`.
        organ: ``liver``, ``spleen`` or ``kidney`` (checked even when no label is read).
        modality: ``"CT"``/``"MR"``. Required for NIfTI images unless the layout implies it
            (lits CT, chaos MR); for DICOM the Modality tag is used when None. A value that
            contradicts the layout or the DICOM Modality tag raises :class:`ArchiveError`.
        label_values: the label values that are the organ; default
            :func:`default_label_values` of the case's layout.
        with_label: False: read only the image (the mask is None).

    Returns:
        ``(image, mask)``: the image :class:`Volume` (``case_id`` = ``case.case_id``) and a
        uint8 0/1 array of ``image.shape`` (label aligned through the affines with
        :func:`~anunet_core.volumes.align_label_to_image`; CHAOS PNGs placed by slice
        position), or None when ``with_label`` is False or the case has no label.

    Raises:
        VolumeReadError, LabelMismatchError, ArchiveError: one line naming the file.
    """
    organ = _organ(organ)
    mod = _resolve_modality(case, modality)
    read_label = with_label and case.label is not None
    # before any pixel is read: a wrong organ, layout or value list fails fast
    values = None if label_values is None else _label_values(label_values)
    if read_label and values is None:
        values = default_label_values(case.layout, organ)

    if case.image.is_dir():
        if mod is not None and case.modality is None:
            _check_dicom_modality(case.image, mod)
        image = read_dicom_series(case.image, modality=mod, case_id=case.case_id)
    elif not case.image.exists():
        raise VolumeReadError(f"{case.image}: no such file or folder")
    else:
        if mod is None:
            raise ArchiveError(
                f"{case.image}: NIfTI has no modality tag; pass modality='CT' or 'MR'"
            )
        image = read_nifti(case.image, mod, case_id=case.case_id)

    if not read_label:
        return image, None
    if case.layout == "chaos":
        labels = read_chaos_labels(case.label, case.image, image)
    else:
        if not case.label.is_file():
            raise VolumeReadError(f"{case.label}: no such label file")
        label_array, label_affine = read_label_nifti(case.label)
        try:
            labels = align_label_to_image(label_array, label_affine, image)
        except LabelMismatchError as exc:
            raise LabelMismatchError(
                f"{case.label}: does not line up with {case.image.name}: {_one_line(exc)}"
            ) from exc
    return image, label_to_mask(labels, values)


# ----------------------------------------------------------------------------------------------
# CHAOS ground truth
# ----------------------------------------------------------------------------------------------


def _chaos_lut() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    for low, high, value in CHAOS_GREY_RANGES:
        lut[low : high + 1] = value
    return lut


def _png_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p
        for p in entries
        if not _hidden(p.name) and p.is_file() and p.name.lower().endswith(".png")
    ]


def _read_png(path: Path) -> np.ndarray:
    # The one PNG decoder of the project lives with the PNG writer in synthetic.py.
    from anunet_core.synthetic import read_png_gray

    try:
        gray = read_png_gray(path)
    except Exception as exc:  # ValueError, zlib.error, struct.error, OSError...
        reason = _one_line(exc)
        if reason.startswith(f"{path}: "):
            reason = reason[len(f"{path}: ") :]
        raise ArchiveError(f"{path}: cannot read ground-truth PNG: {reason}") from exc
    return np.asarray(gray, dtype=np.uint8)


def read_chaos_labels(ground: Path, series: Path, image: Volume) -> np.ndarray:
    """CHAOS ground truth (a folder of PNGs) as a uint8 label volume on ``image``'s grid.

    ``image`` is the series in ``series`` as read by
    :func:`~anunet_core.volumes.read_dicom_series`. The i-th PNG (sorted by name) belongs
    to the i-th DICOM image file (sorted by name); the file's slice index k is its rank by
    position along the slice normal, ``dot(row_cos x col_cos, ImagePositionPatient)`` (headers
    only). ``label[:, :, k] = lut[png].T``, grey values mapped by :data:`CHAOS_GREY_RANGES`
    (TotalSegmentator codes: 5 liver, 2 right kidney, 3 left kidney, 1 spleen).
    """
    ground, series = Path(ground), Path(series)
    if not ground.is_dir():
        raise ArchiveError(f"{ground}: CHAOS Ground folder not found")
    pngs = _png_files(ground)
    headers = []
    for path in _dicom_files(series):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise VolumeReadError(f"{path}: corrupt DICOM file: {_one_line(exc)}") from exc
        if _is_image_sop_class(ds):
            headers.append((path, ds))
    if len(pngs) != len(headers):
        raise ArchiveError(
            f"{ground}: {len(pngs)} ground-truth PNGs but {len(headers)} DICOM files in "
            f"{series} (CHAOS pairs them one to one)"
        )
    n_cols, n_rows, n_slices = image.shape  # array[i = column, j = row, k]
    if len(headers) != n_slices:
        raise ArchiveError(
            f"{series}: {len(headers)} DICOM files but the volume has {n_slices} slices"
        )
    try:
        iop = np.array([float(v) for v in headers[0][1].ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers])
        positions = ipp @ normal
    except (AttributeError, TypeError, ValueError) as exc:
        raise VolumeReadError(f"{series}: invalid slice geometry: {_one_line(exc)}") from exc
    order = np.argsort(positions, kind="stable")  # the rule of read_dicom_series
    slot = np.empty(len(order), dtype=np.int64)
    slot[order] = np.arange(len(order))  # file index (name order) -> slice index k

    lut = _chaos_lut()
    labels = np.zeros(image.shape, dtype=np.uint8)
    for index, (png, (dcm, _)) in enumerate(zip(pngs, headers)):
        gray = _read_png(png)
        if gray.shape != (n_rows, n_cols):
            raise ArchiveError(
                f"{png}: {gray.shape[0]}x{gray.shape[1]} pixels, but its DICOM slice "
                f"{dcm.name} is {n_rows}x{n_cols}"
            )
        labels[:, :, slot[index]] = lut[gray].T
    return labels


# ----------------------------------------------------------------------------------------------
# Source files and checksums
# ----------------------------------------------------------------------------------------------


def source_files(case: Case) -> list[Path]:
    """Every file the case reads: the image (NIfTI file or the series' DICOM files) and its
    label (NIfTI file or the CHAOS PNGs), sorted. A missing image or label raises
    :class:`ArchiveError`."""
    files: list[Path] = []
    if case.image.is_dir():
        dicom = _dicom_files(case.image)
        if not dicom:
            raise ArchiveError(f"{case.image}: no DICOM files")
        files += dicom
    elif case.image.is_file():
        files.append(case.image)
    else:
        raise ArchiveError(f"{case.image}: no such file or folder")
    if case.label is not None:
        if case.label.is_dir():
            pngs = _png_files(case.label)
            if not pngs:
                raise ArchiveError(f"{case.label}: no PNG files")
            files += pngs
        elif case.label.is_file():
            files.append(case.label)
        else:
            raise ArchiveError(f"{case.label}: no such label file or folder")
    return sorted(set(files))


def case_checksum(case: Case) -> str:
    """SHA-256 (hex) identifying the case's content, independent of where the archive lies.

    ``sha256("".join(f"{rel}\\0{sha256(content)}\\n" for each file))`` over
    :func:`source_files` in order, ``rel`` being the file's path (``/``-separated) relative to
    the deepest folder holding all of them. Files are streamed in 1 MiB chunks.
    """
    files = source_files(case)
    base = Path(os.path.commonpath([str(p.parent) for p in files]))
    outer = hashlib.sha256()
    for path in files:
        inner = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK_BYTES):
                    inner.update(chunk)
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot read: {_one_line(exc)}") from exc
        rel = path.relative_to(base).as_posix()
        outer.update(os.fsencode(rel) + b"\0" + inner.hexdigest().encode("ascii") + b"\n")
    return outer.hexdigest()
