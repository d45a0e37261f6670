"""Pseudonymous case ids: an HMAC-SHA256 of the path-derived id, keyed by a secret.

PACS exports often name folders after the patient, and case ids come from folder and file
names. With a key (a Kubernetes Secret in the environment variable :data:`PSEUDONYM_KEY_ENV`),
:func:`pseudonymize` replaces every case id and patient id by ``anon-<16 hex>`` and every
source path by the same kind of token, so masks, previews, manifests, Parquet rows, error
lists, logs and MLflow tags carry no name. The same key gives the same ids on every run (resume
works, and ingest, segment and evaluate agree); without the key the ids cannot be traced back.
The map from pseudonym to source path is returned for the operator to keep, never written by
default.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import replace
from pathlib import Path

from anunet_core.archives.case import ArchiveError, Case
from anunet_core.archives.printable import printable_path

__all__ = ["PSEUDONYM_KEY_ENV", "pseudonym", "pseudonym_key", "redact"]

PSEUDONYM_KEY_ENV = "ANUNET_PSEUDONYM_KEY"
"""The environment variable holding the pseudonymisation key (at least 16 characters)."""
_MIN_KEY_CHARS = 16


def pseudonym_key(environ: dict[str, str] | None = None) -> bytes:
    """The key from :data:`PSEUDONYM_KEY_ENV`; missing or short: :class:`ArchiveError`."""
    key = (os.environ if environ is None else environ).get(PSEUDONYM_KEY_ENV, "")
    if len(key) < _MIN_KEY_CHARS:
        raise ArchiveError(
            f"--pseudonymize needs a secret key of at least {_MIN_KEY_CHARS} characters in ${PSEUDONYM_KEY_ENV} "
            f"({'too short' if key else 'not set'}); keep it: the same key gives the same ids on every run"
        )
    return key.encode("utf-8")


def pseudonym(identifier: str, key: bytes) -> str:
    """``anon-`` and the first 16 hex digits (64 bits) of HMAC-SHA256(key, identifier)."""
    digest = hmac.new(key, identifier.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
    return f"anon-{digest[:16]}"


def pseudonymize_case(case: Case, key: bytes) -> Case:
    """``case`` with its case id and patient id replaced by their pseudonyms (paths kept)."""
    return replace(case, case_id=pseudonym(case.case_id, key), patient_id=pseudonym(f"patient\0{case.patient_id}", key))


def redact(text: str, case: Case) -> str:
    """``text`` (an error reason) with the case's image and label paths replaced by its id."""
    for path, name in ((case.image, case.case_id), (case.label, f"{case.case_id}/label")):
        if path is not None:
            text = text.replace(printable_path(path), name).replace(os.fsdecode(path), name)
    return text


def path_token(path: Path, root: Path, key: bytes) -> str:
    """The pseudonym of an archive entry that is no case (an ignored file)."""
    return pseudonym(f"path\0{os.path.relpath(path, root)}", key)

