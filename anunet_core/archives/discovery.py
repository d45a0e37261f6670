"""Which layout an archive has, and its cases: names and cheap headers only.

Discovery looks only at names and at most 132 bytes of a file (to recognise DICOM): it never
reads pixels, so it is fast on big archives, and a corrupt file is *not* found here but in
:func:`~anunet_core.archives.loading.load_case`.

Detection order (:func:`detect_layout`): chaos (``MR/<id>/T2SPIR`` or ``T1DUAL``), msd
(``imagesTr``/``imagesTs`` in the root or up to 2 levels down), lits (``volume-N.nii*`` or
``test-volume-N.nii*`` up to 2 levels deep), dicom (any DICOM file anywhere), pairs (any
NIfTI file anywhere). So an archive of NIfTI pairs with one stray DICOM file is detected as
``dicom``: pass ``layout="pairs"``.

``require_labels``: discovery never drops a case silently. With ``require_labels=True`` only
cases that are unlabelled *by design* are left out (LiTS ``test-volume-N``, MSD ``imagesTs``);
every other case is returned, with ``label=None`` when its label file is missing: the caller
decides (ingest lists it as an error).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from anunet_core.archives import chaos, dicom, lits, msd, pairs
from anunet_core.archives.case import LAYOUTS, ArchiveError, Case
from anunet_core.archives.inventory import Entry, list_entries
from anunet_core.archives.names import (
    LABEL_NAMES,
    LABEL_SUFFIXES,
    nifti_stem,
    unique_ids,
)
from anunet_core.archives.printable import printable_path
from anunet_core.archives.pseudonyms import path_token, pseudonym_key, pseudonymize_case
from anunet_core.io import write_json_atomic

__all__ = ["ArchiveInventory", "Ignored", "check_layout", "detect_layout", "discover_cases", "layout_module",
           "pseudonymize_inventory", "take_inventory"]

logger = logging.getLogger(__name__)

_LAYOUT_MODULES = {"lits": lits, "chaos": chaos, "msd": msd, "dicom": dicom, "pairs": pairs}
_DETECTION_ORDER: tuple[str, ...] = ("chaos", "msd", "lits", "dicom", "pairs")
assert set(_LAYOUT_MODULES) == set(LAYOUTS)


def layout_module(layout: str):
    """The module that knows ``layout`` (its ``discover``, ``label_values``, ``HINT``)."""
    return _LAYOUT_MODULES[check_layout(layout, allow_auto=False)]


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(os.path.abspath(os.fspath(root)))  # absolute, symlinks kept (names stay)
    if not path.exists():
        raise ArchiveError(f"{path}: no such archive folder")
    if not path.is_dir():
        raise ArchiveError(f"{path}: not a folder (an archive is a folder of scans)")
    return path


def check_layout(layout: str, allow_auto: bool) -> str:
    name = str(layout).strip().lower()
    if name == "auto" and allow_auto:
        return name
    if name not in LAYOUTS:
        choices = ("auto",) + LAYOUTS if allow_auto else LAYOUTS
        raise ArchiveError(f"unknown archive layout {layout!r}; choose one of {', '.join(choices)}")
    return name


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of the archive at ``root`` (one of :data:`LAYOUTS`), from names only.

    Markers, tried in this order: chaos (``MR/<id>/T2SPIR`` or ``T1DUAL``, ``MR`` being the
    root, ``ROOT/MR`` or ``ROOT/*/MR``), msd (``imagesTr``/``imagesTs`` in the root or up to 2
    levels down), lits (``volume-N.nii[.gz]`` up to 2 levels deep), dicom (a file with the DICOM
    preamble anywhere: 132 bytes read per candidate file, stopping at the first), pairs (any
    NIfTI file). Nothing recognisable (or an empty folder) raises :class:`ArchiveError`.
    """
    root = _check_root(root)
    return _detect_from_entries(root, list_entries(root))


# ----------------------------------------------------------------------------------------------
# Every file accounted for
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ignored:
    """An entry of the archive that is not (part of) a case, and why (one line)."""

    path: Path
    reason: str
    files: int = 1


@dataclass
class ArchiveInventory:
    """An archive's cases and everything else in it: every file is in exactly one of them.

    Attributes:
        root: the archive's folder.
        layout: the layout detected (or forced); cases of other kinds found beside it (a NIfTI
            scan in a DICOM archive) are cases too, with their own layout.
        cases: sorted by case id.
        ignored: the entries that belong to no case, with their reasons, sorted by path.
        case_files: ``{case_id: files}``: the entries each case takes (its image file or the
            files of its DICOM series, and its label files).
    """

    root: Path
    layout: str
    cases: list[Case]
    ignored: list[Ignored] = field(default_factory=list)
    case_files: dict[str, int] = field(default_factory=dict)
    tokens: dict[Path, str] | None = None  # pseudonymised: each image or entry path -> its token

    def source(self, path: Path) -> str:
        """What outputs say a case or an ignored entry came from: its path relative to the
        root (printable, lossless), or its pseudonym when the inventory is pseudonymised."""
        if self.tokens is not None:
            return self.tokens[path]
        return printable_path(os.path.relpath(path, self.root))

    def pseudonymized(self, key: bytes) -> tuple[ArchiveInventory, dict[str, str]]:
        """This inventory with pseudonymous case ids, patient ids and sources
        (:mod:`~anunet_core.archives.pseudonyms`), and the map ``{pseudonym: original}`` for the
        operator (source paths, and patient ids under ``patient:<pseudonym>``)."""
        cases = [pseudonymize_case(c, key) for c in self.cases]
        if len({c.case_id for c in cases}) != len(cases):
            raise ArchiveError(f"{printable_path(self.root)}: two cases share a pseudonym; use another key")
        tokens = {c.image: c.case_id for c in cases} | {i.path: path_token(i.path, self.root, key) for i in self.ignored}
        id_map = {token: printable_path(os.path.relpath(path, self.root)) for path, token in tokens.items()}
        id_map |= {f"patient:{new.patient_id}": old.patient_id for old, new in zip(self.cases, cases, strict=True)}
        case_files = {new.case_id: self.case_files.get(old.case_id, 0) for old, new in zip(self.cases, cases, strict=True)}
        inventory = ArchiveInventory(self.root, self.layout, sorted(cases, key=lambda c: c.case_id), self.ignored,
                                     case_files, tokens)
        return inventory, dict(sorted(id_map.items()))

    @property
    def files(self) -> int:
        """Every entry found under the root (cases' files plus ignored ones)."""
        return sum(self.case_files.values()) + sum(i.files for i in self.ignored)

    def reasons(self) -> Counter:
        """How many ignored files per reason."""
        counts: Counter = Counter()
        for item in self.ignored:
            counts[item.reason] += item.files
        return counts

    def line(self) -> str:
        """``"12 cases (9 dicom, 3 pairs) from 845 files; 4 ignored: 2 not a scan (.txt file), ..."``."""
        kinds = Counter(c.layout for c in self.cases)
        text = (f"{len(self.cases)} cases ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}) "
                f"from {self.files} files in {printable_path(self.root)}")
        ignored = sum(i.files for i in self.ignored)
        if ignored:
            text += f"; {ignored} ignored: " + ", ".join(f"{n} {r}" for r, n in self.reasons().most_common())
        return text


def take_inventory(root: str | os.PathLike, layout: str = "auto", require_labels: bool = False,
                   quiet: bool = False) -> ArchiveInventory:
    """The cases of the archive at ``root`` and every other file in it, with its reason.

    The layout's cases come first (:func:`detect_layout`, or ``layout``); any scan they leave
    out becomes a case of its own: a folder holding a DICOM series (layout ``dicom``) or a
    NIfTI file (layout ``pairs``, with its label when one lies beside it). So a mix of NIfTI
    files and DICOM series at any depth is found whole.

    ``require_labels`` (training data): cases unlabelled by design (LiTS ``test-volume-N``,
    MSD ``imagesTs``) are ignored ("no label by design"), and a scan the layout does not cover
    is an :class:`ArchiveError` listing them: training never runs on a silent subset.

    Never reads pixels: names, one ``lstat`` per entry, and at most 4 KiB of files that may be
    DICOM. No case at all raises :class:`ArchiveError`. ``quiet``: the layouts' warnings,
    which name files (a label without its scan), are not logged (``--pseudonymize``).
    """
    if quiet:
        archives_log = logging.getLogger("anunet_core.archives")
        level, archives_log.level = archives_log.level, logging.ERROR
        try:
            return take_inventory(root, layout, require_labels)
        finally:
            archives_log.setLevel(level)
    layout = check_layout(layout, allow_auto=True)
    root = _check_root(root)
    entries = list_entries(root)
    if layout == "auto":
        layout = _detect_from_entries(root, entries)
    accounting = _Accounting(root, entries)
    by_design: list[Case] = []
    cases = _LAYOUT_MODULES[layout].discover(root, False)
    if require_labels:
        labelled = {c.image for c in _LAYOUT_MODULES[layout].discover(root, True)}
        by_design = [c for c in cases if c.image not in labelled]
        cases = [c for c in cases if c.image in labelled]
    cases = accounting.claim(cases)
    for case in accounting.claim(by_design):
        accounting.ignore_case(case, "no label by design (a test-set scan)")
    extra = []
    if layout != "dicom" and accounting.unclaimed("dicom"):
        extra += accounting.claim(dicom.discover(root, False))
    if layout != "pairs" and accounting.unclaimed("nifti"):
        # an MSD images folder's other files are further channels of its cases, not scans
        msd_folders = {c.image.parent for c in cases if c.layout == "msd"}
        extra += accounting.claim(c for c in pairs.discover(root, False) if c.image.parent not in msd_folders)
    if extra and require_labels:
        listing = ", ".join(printable_path(os.path.relpath(c.image, root)) for c in extra[:10])
        more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
        raise ArchiveError(
            f"{printable_path(root)}: {len(extra)} scan(s) outside the {layout} layout ({listing}{more}); "
            f"the layout pairs {len(cases)} case(s): move the others out or ingest them separately"
        )
    cases = unique_ids(root, cases + extra)
    if not cases:
        raise ArchiveError(_no_cases_message(root, layout, entries))
    return accounting.inventory(layout, cases)


def discover_cases(
    root: str | os.PathLike, layout: str = "auto", require_labels: bool = False
) -> list[Case]:
    """The cases of the archive at ``root``, sorted by ``case_id`` (:func:`take_inventory`).

    Args:
        root: the archive's folder.
        layout: ``"auto"`` (:func:`detect_layout`) or one of :data:`LAYOUTS` to force it;
            anything else raises :class:`ArchiveError` listing the layouts.
        require_labels: leave out the cases that are unlabelled by design (LiTS
            ``test-volume-N``, MSD ``imagesTs``), and refuse scans the layout cannot pair.
            Nothing else is dropped: a case whose label file is missing is returned with
            ``label=None`` and the caller reports it.

    Only names and cheap headers are read: corrupt files are found by :func:`load_case`.
    No case at all raises :class:`ArchiveError` (``"no cases found in <root> ..."``).
    """
    return take_inventory(root, layout, require_labels).cases


def _detect_from_entries(root: Path, entries: list[Entry]) -> str:
    for name in ("chaos", "msd", "lits"):  # markers in names only
        if _LAYOUT_MODULES[name].is_present(root):
            return name
    kinds = {e.kind for e in entries}
    if "dicom" in kinds:
        return "dicom"
    if "nifti" in kinds:
        return "pairs"
    raise ArchiveError(_no_cases_message(root, "auto", entries))


def _no_cases_message(root: Path, layout: str, entries: list[Entry]) -> str:
    n_files = sum(e.files for e in entries)
    what = "it is empty" if n_files == 0 else f"none of its {n_files} files is a scan"
    if layout != "auto":
        return f"no cases found in {printable_path(root)} for layout {layout!r} ({what}; expected {_LAYOUT_MODULES[layout].HINT})"
    return (
        f"no cases found in {printable_path(root)} ({what}); tried layouts "
        + "; ".join(f"{name}: {_LAYOUT_MODULES[name].HINT}" for name in _DETECTION_ORDER)
    )


_CHANNEL = re.compile(r"_(?!0000)\d{4}\.nii(\.gz)?$", re.IGNORECASE)


def _is_label_name(name: str) -> bool:
    stem = (nifti_stem(name) or "").lower()
    return (stem in LABEL_NAMES or stem.endswith(LABEL_SUFFIXES) or stem.startswith("segmentation-")
            or stem.startswith("test-segmentation-"))


class _Accounting:
    """Which case takes each entry; what is left is ignored, with a reason."""

    def __init__(self, root: Path, entries: list[Entry]) -> None:
        self.root = root
        self.entries = {e.path: e for e in entries}
        self.by_folder: dict[Path, list[Entry]] = defaultdict(list)
        for e in entries:
            self.by_folder[e.path.parent].append(e)
        self.owner: dict[Path, str] = {}  # entry path -> the image path (str) of its case
        self.labels: set[Path] = set()  # entries taken as (possibly shared) label files
        self.case_dirs: dict[Path, Case] = {}  # folders that belong to one case
        self.ignored: list[Ignored] = []

    def unclaimed(self, kind: str) -> bool:
        return any(e.kind == kind and p not in self.owner for p, e in self.entries.items())

    def _files_of_image(self, case: Case) -> list[Path] | None:
        """The entries a case's image takes; None when its image is not a usable entry."""
        entry = self.entries.get(case.image)
        if entry is not None:  # a file
            return [case.image] if entry.kind == "nifti" else None
        folder = self.by_folder.get(case.image)
        if folder is None:
            # an empty or missing series folder: the case stays, and its reader says what is wrong
            return [] if case.image.is_dir() or not os.path.lexists(case.image) else None
        slices = [e.path for e in folder if e.kind in ("dicom", "slice?")]
        return slices or None  # a folder of non-image DICOM objects (reports) is no series

    def _files_of_label(self, case: Case) -> list[Path] | None:
        if case.label is None:
            return None
        entry = self.entries.get(case.label)
        if entry is not None:
            return [case.label] if entry.kind == "nifti" else None
        return [e.path for e in self.by_folder.get(case.label, []) if e.path.name.lower().endswith(".png")]

    def claim(self, cases: Iterable[Case]) -> list[Case]:
        """The cases whose image no earlier case took, each taking its files; a label's files
        may be shared (CHAOS T1 in- and opposed-phase share ``Ground``), never an image's."""
        kept = []
        for case in cases:
            files = self._files_of_image(case)
            if files is None or case.image in self.owner or any(p in self.owner for p in files):
                continue
            label_files = self._files_of_label(case)
            if label_files is None or any(p in self.owner and p not in self.labels for p in label_files):
                if case.label is not None:
                    case = Case(case.case_id, case.patient_id, case.layout, case.image, None, case.modality)
                label_files = []
            key = str(case.image)
            for p in [case.image, *files]:
                self.owner[p] = key
            for p in label_files:
                self.owner.setdefault(p, key)
                self.labels.add(p)
            self.case_dirs[_case_folder(case)] = case
            kept.append(case)
        return kept

    def ignore_case(self, case: Case, reason: str) -> None:
        key = str(case.image)
        for path in [p for p, owner in self.owner.items() if owner == key]:
            del self.owner[path]
            if path in self.entries:
                self.ignored.append(Ignored(path, reason))
        self.owner[case.image] = key  # never claimed by a later layout either

    def inventory(self, layout: str, cases: list[Case]) -> ArchiveInventory:
        counts: Counter = Counter(self.owner[p] for p in self.entries if p in self.owner)
        case_files = {c.case_id: counts.get(str(c.image), 0) for c in cases}
        ignored = list(self.ignored)
        ignored_paths = {i.path for i in ignored}
        claimed = {str(c.image) for c in cases}
        for path, entry in self.entries.items():
            if path in ignored_paths or (path in self.owner and self.owner[path] in claimed):
                continue
            ignored.append(Ignored(path, self._reason(entry), entry.files))
        return ArchiveInventory(self.root, layout, cases, sorted(ignored, key=lambda i: os.fsencode(i.path)),
                                case_files)

    def _reason(self, entry: Entry) -> str:
        if entry.kind == "other" or entry.kind == "slice?":
            if entry.path.name.lower().endswith(".png") and entry.path.parent.name.lower() == "ground":
                return "label slice without its series"
            return entry.reason
        if entry.kind == "nifti" and _is_label_name(entry.path.name):
            return "label file without its scan"
        if entry.kind == "nifti" and _CHANNEL.search(entry.path.name):
            return "another channel of a multi-channel scan (its channel _0000 is the case)"
        for folder in entry.path.parents:
            if folder == self.root or self.root not in folder.parents:
                break
            case = self.case_dirs.get(folder)
            if case is not None:
                return f"in the folder of case {case.case_id} but neither its image nor its label"
        if entry.kind == "nifti":
            return "another copy of a scan beside it (.nii and .nii.gz of one name)"
        return f"not part of any case of the {entry.kind} kind"


def _case_folder(case: Case) -> Path:
    """The folder that is the case: a folder-per-case's folder, a series folder (or the case
    folder above a series folder named ``dicom``); the file's own folder otherwise."""
    if case.image.is_dir():
        return case.image.parent if case.image.name.lower() == "dicom" else case.image
    return case.image.parent


def pseudonymize_inventory(inventory: ArchiveInventory, id_map: Path | None) -> ArchiveInventory:
    """``inventory`` with pseudonymous ids and sources, keyed by :func:`pseudonym_key`; the map
    back to the archive's names goes only to ``id_map``, the file the operator named (mode
    0600), and nowhere when it is None."""
    pseudonymous, mapping = inventory.pseudonymized(pseudonym_key())
    if id_map is not None:
        write_json_atomic(Path(id_map), mapping)
        os.chmod(id_map, 0o600)
        logger.info("pseudonymised %d cases; their map is in %s", len(pseudonymous.cases), id_map)
    else:
        logger.info("pseudonymised %d cases (no --id-map: the names cannot be looked up)", len(pseudonymous.cases))
    return pseudonymous
