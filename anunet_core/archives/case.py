"""A case of an archive (one scan and its label) and the archive's error type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anunet_core.archives.printable import path_from_printable, printable_path
from anunet_core.vocabulary import MODALITIES

__all__ = ["LAYOUTS", "ArchiveError", "Case"]

LAYOUTS: tuple[str, ...] = ("lits", "chaos", "msd", "dicom", "pairs")
"""The archive layouts we read; one module of :mod:`anunet_core.archives` each."""


class ArchiveError(ValueError):
    """An archive or a case cannot be used as asked; one line naming the folder or file."""


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

    Picklable; :meth:`to_dict` / :meth:`from_dict` give plain printable strings for table rows
    (paths in :func:`~anunet_core.archives.printable.printable_path`'s lossless spelling, so a file
    name that is not UTF-8 survives Arrow, Parquet and JSON).
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
        """Plain strings (paths printable and lossless), e.g. for a Ray Data / Parquet row."""
        return {
            "case_id": self.case_id,
            "patient_id": self.patient_id,
            "layout": self.layout,
            "image": printable_path(self.image),
            "label": None if self.label is None else printable_path(self.label),
            "modality": self.modality,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Case:
        """Inverse of :meth:`to_dict`."""
        return cls(
            case_id=data["case_id"],
            patient_id=data["patient_id"],
            layout=data["layout"],
            image=Path(path_from_printable(data["image"])),
            label=None if data.get("label") in (None, "") else Path(path_from_printable(data["label"])),
            modality=data.get("modality") or None,
        )
