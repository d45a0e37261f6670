"""Find the cases of a scan archive, in every layout we ingest, and load one case.

Used by the ingest job (training data: labels required), the nightly segmentation job (labels
not needed) and the evaluate job. Discovery (:func:`detect_layout`, :func:`discover_cases`)
reads names and cheap headers only; :func:`load_case` reads one case and fails with a one-line
error naming the file (:class:`ArchiveError`, :class:`~anunet_core.io.VolumeReadError` or
:class:`~anunet_core.io.LabelMismatchError`, all ``ValueError``), which the caller records as
that case's failure while the other cases go on.

One module per concept:

- ``case``: :class:`Case` and :class:`ArchiveError`;
- ``names``: hidden entries, walking, DICOM sniffing, filesystem-safe unique case ids;
- ``lits``, ``chaos``, ``msd``, ``dicom``, ``pairs``: one per layout, each with its folder
  tree, its detection marker, its discovery and its label values;
- ``inventory``: every entry under the root, classified (a scan file, or not and why);
- ``discovery``: :func:`detect_layout`, :func:`take_inventory` (the cases and every other file
  with its reason) and :func:`discover_cases`;
- ``printable``: the lossless printable spelling of paths (names that are not UTF-8);
- ``pseudonyms``: HMAC-SHA256 case ids for ``--pseudonymize`` (no patient name in any output);
- ``loading``: :func:`load_case`, :func:`default_label_values`, :func:`source_files`,
  :func:`case_checksum`.

Case ids (``Case.case_id``): lits ``lits-<N>`` and ``lits-test-<N>``; chaos
``chaos-<id>-t2spir|t1in|t1out`` (patient ``chaos-<id>``); msd the image's base name
(``liver_001``); dicom and pairs the case folder's path below the root with ``__`` between
folders (``case_0000``, ``site_b__patient_7``; the root's own name when the root is the case),
flat pairs ``<case>`` (prefixed ``<folder>__`` below the root). ``patient_id`` (the key of
patient-level splits) is the case id, except CHAOS, whose series of one patient share
``chaos-<id>``. See :mod:`anunet_core.archives.names` for how ids are made safe and unique.
"""

from anunet_core.archives.case import LAYOUTS, ArchiveError, Case
from anunet_core.archives.chaos import read_chaos_labels
from anunet_core.archives.discovery import (
    ArchiveInventory,
    Ignored,
    detect_layout,
    discover_cases,
    pseudonymize_inventory,
    take_inventory,
)
from anunet_core.archives.loading import case_checksum, default_label_values, load_case, source_files
from anunet_core.archives.names import IMAGE_NAMES, LABEL_NAMES, LABEL_SUFFIXES
from anunet_core.archives.printable import path_from_printable, printable_path
from anunet_core.archives.pseudonyms import (
    PSEUDONYM_KEY_ENV,
    pseudonym,
    pseudonym_key,
    redact,
)

__all__ = [
    "IMAGE_NAMES",
    "LABEL_NAMES",
    "LABEL_SUFFIXES",
    "LAYOUTS",
    "PSEUDONYM_KEY_ENV",
    "ArchiveError",
    "ArchiveInventory",
    "Case",
    "Ignored",
    "case_checksum",
    "default_label_values",
    "detect_layout",
    "discover_cases",
    "load_case",
    "path_from_printable",
    "printable_path",
    "pseudonym",
    "pseudonym_key",
    "pseudonymize_inventory",
    "redact",
    "read_chaos_labels",
    "source_files",
    "take_inventory",
]
