"""What the registry calls things: model names, aliases, version tags and the files a version holds.

A training run registers one model per pruning depth, ``anunet-{organ}-{modality}-L{depth}``
(:func:`registered_model_name`); ``anunet-{organ}-{modality}`` names the family of the four.
:class:`RegisteredDepth` is one registered version as the rest of the platform sees it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from anunet_core.vocabulary import DEPTHS, MAX_DEPTH, MODALITIES, is_depth
from anunet_platform.registry.store import RegistryError

CANDIDATE = "candidate"
PRODUCTION = "production"
# The version tags of the DESIGN contract (plus input_size; any further per-depth metrics, e.g.
# val_precision and val_recall, and organ/modality are tagged too).
TAG_KEYS = (
    "depth",
    "params",
    "val_dice",
    "val_iou",
    "latency_ms_per_slice",
    "input_size",
    "alpha",
    "gamma",
    "dataset",
)
REQUIRED_METRICS = ("val_dice", "val_iou")
# What a registered version holds besides the MLflow model (see register.py): the exact ANUNet.
WEIGHTS_FILE = "anunet_state_dict.pt"
CONFIG_FILE = "anunet_config.json"
EXTRA_FILES_DIR = "extra_files"  # where mlflow.pytorch.save_model puts extra_files

_MODALITIES = "|".join(m.lower() for m in MODALITIES)
NAME_PATTERN = re.compile(rf"^anunet-(?P<organ>[a-z0-9_]+)-(?P<modality>{_MODALITIES})-L(?P<depth>[0-9]+)$")
_FAMILY_PATTERN = re.compile(rf"^anunet-(?P<organ>[a-z0-9_]+)-(?P<modality>{_MODALITIES})(?:-L(?P<depth>[0-9]+))?$")
_RUN_ID_PATTERN = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


@dataclass(frozen=True)
class RegisteredDepth:
    """One registered model version of one depth: ``name``/``version`` and its tags."""

    name: str
    version: str
    depth: int
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_version(cls, mv, depth: int) -> RegisteredDepth:
        """From an MLflow ``ModelVersion`` of depth ``depth``."""
        return cls(name=mv.name, version=str(mv.version), depth=depth, tags=dict(mv.tags or {}),
                   aliases=tuple(mv.aliases or ()))

    @property
    def val_dice(self) -> float:
        return float(self.tags.get("val_dice", "nan"))

    @property
    def latency_ms_per_slice(self) -> float:
        return float(self.tags.get("latency_ms_per_slice", "nan"))

    @property
    def params(self) -> int:
        return int(self.tags.get("params", "0"))

    @property
    def val_case_dice(self) -> tuple[float, ...]:
        """The volume Dice (0..1) of each validation case at this depth, from the tag
        ``val_case_dice`` (a JSON list of numbers, the same cases in the same order for every
        depth of a run; :meth:`case_dice_tag` writes it); ``()`` when the tag is missing.
        A bad tag is a :class:`ValueError` (one line)."""
        raw = self.tags.get("val_case_dice")
        if raw is None:
            return ()
        try:
            values = json.loads(raw)
        except ValueError:
            values = None
        if not isinstance(values, list) or not all(_is_dice(v) for v in values):
            shown = raw if len(raw) <= 60 else raw[:57] + "..."
            raise ValueError(
                f"tag val_case_dice of {self.name} v{self.version} must be a JSON list of Dice values in [0, 1], got {shown!r}"
            )
        return tuple(float(v) for v in values)

    @staticmethod
    def case_dice_tag(values: Iterable[float]) -> str:
        """The ``val_case_dice`` tag of per-case volume Dice values: a JSON list, 6 decimals
        (at most 9 characters a case; MLflow keeps model-version tag values of up to 100,000)."""
        dice = [float(v) for v in values]
        if not all(_is_dice(v) for v in dice):
            raise ValueError(f"val_case_dice must be Dice values in [0, 1], got {dice!r}")
        return json.dumps([round(v, 6) for v in dice], separators=(",", ":"))


def _is_dice(value: object) -> bool:
    """A number (not a bool) in [0, 1]."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value <= 1.0)


def registered_model_name(organ: str, modality: str, depth: int) -> str:
    """``anunet-{organ}-{modality}-L{depth}``: organ and modality lower case, e.g.
    ``registered_model_name("liver", "CT", 3) == "anunet-liver-ct-L3"``."""
    organ_l, modality_l = str(organ).strip().lower(), str(modality).strip().lower()
    if not re.fullmatch(r"[a-z0-9_]+", organ_l):
        raise RegistryError(f"organ must be a lower-case word like 'liver', got {organ!r}")
    if modality_l.upper() not in MODALITIES:
        raise RegistryError(f"modality must be {' or '.join(MODALITIES)}, got {modality!r}")
    if not is_depth(depth):
        raise RegistryError(f"depth must be an int in 1..{MAX_DEPTH}, got {depth!r}")
    return f"anunet-{organ_l}-{modality_l}-L{depth}"


def family_name(organ: str, modality: str) -> str:
    """``anunet-{organ}-{modality}``: the registered names without ``-L{depth}``."""
    return registered_model_name(organ, modality, DEPTHS[0]).rsplit("-L", 1)[0]


def parse_model_family(name: str) -> tuple[str, str, int | None]:
    """``(organ, modality, depth)`` of a family name ``anunet-{organ}-{modality}`` (depth None)
    or of one registered name ``anunet-{organ}-{modality}-L{depth}``, e.g.
    ``parse_model_family("anunet-liver-ct") == ("liver", "CT", None)``."""
    match = _FAMILY_PATTERN.fullmatch(str(name).strip())
    if match is None or (match["depth"] is not None and int(match["depth"]) not in DEPTHS):
        raise RegistryError(
            f"model must be a family name like 'anunet-liver-ct' (or one depth, 'anunet-liver-ct-L2'), got {name!r}"
        )
    depth = None if match["depth"] is None else int(match["depth"])
    return match["organ"], match["modality"].upper(), depth


def check_run_id(run_id: object) -> str:
    """``run_id`` if it looks like an MLflow run id (safe to quote in a search filter)."""
    if not isinstance(run_id, str) or not _RUN_ID_PATTERN.match(run_id):
        raise RegistryError(f"not an MLflow run id: {run_id!r}")
    return run_id
