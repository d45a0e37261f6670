"""What the registry calls things: model names, aliases, version tags and the files a version holds.

A training run of ANU-Net registers one model per pruning depth, ``anunet-{organ}-{modality}-L{depth}``
(:func:`registered_model_name`); ``anunet-{organ}-{modality}`` names the family of the four.
The paper's baselines (``--arch``, :data:`~anunet_core.vocabulary.ARCHS`) register under their
own name in place of ``anunet``: UNet++, nested like ANU-Net, per depth
(``unetpp-liver-ct-L2``); the networks with one output once, as ``{arch}-{organ}-{modality}``
(``unet-liver-ct``), their one depth being 4. :class:`RegisteredDepth` is one registered
version as the rest of the platform sees it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from anunet_core.vocabulary import ARCHS, DEPTHS, MAX_DEPTH, MODALITIES, NESTED_ARCHS, is_depth
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
    "arch",
)
REQUIRED_METRICS = ("val_dice", "val_iou")
# What a registered version holds besides the MLflow model (see register.py): the exact ANUNet.
WEIGHTS_FILE = "anunet_state_dict.pt"
CONFIG_FILE = "anunet_config.json"
EXTRA_FILES_DIR = "extra_files"  # where mlflow.pytorch.save_model puts extra_files

_MODALITIES = "|".join(m.lower() for m in MODALITIES)
_FAMILY_PATTERN = re.compile(
    rf"^(?P<arch>[a-z0-9]+)-(?P<organ>[a-z0-9_]+)-(?P<modality>{_MODALITIES})(?:-L(?P<depth>[0-9]+))?$"
)
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


class ModelName(NamedTuple):
    """What a registered model's name says: organ, modality (upper case), depth (None for a
    nested family's name without ``-L{d}``) and architecture."""

    organ: str
    modality: str
    depth: int | None
    arch: str = "anunet"


def registered_model_name(organ: str, modality: str, depth: int, arch: str = "anunet") -> str:
    """The registered name of one depth: ``{arch}-{organ}-{modality}-L{depth}`` for the nested
    networks, ``{arch}-{organ}-{modality}`` for the others (whose one depth is 4); organ and
    modality lower case, e.g. ``registered_model_name("liver", "CT", 3) == "anunet-liver-ct-L3"``
    and ``registered_model_name("liver", "CT", 4, "unet") == "unet-liver-ct"``."""
    organ_l, modality_l, arch_l = str(organ).strip().lower(), str(modality).strip().lower(), str(arch).strip().lower()
    if arch_l not in ARCHS:
        raise RegistryError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if not re.fullmatch(r"[a-z0-9_]+", organ_l):
        raise RegistryError(f"organ must be a lower-case word like 'liver', got {organ!r}")
    if modality_l.upper() not in MODALITIES:
        raise RegistryError(f"modality must be {' or '.join(MODALITIES)}, got {modality!r}")
    if not is_depth(depth):
        raise RegistryError(f"depth must be an int in 1..{MAX_DEPTH}, got {depth!r}")
    if arch_l not in NESTED_ARCHS:
        if depth != MAX_DEPTH:
            raise RegistryError(f"{arch_l} has one output and no depths: depth must be {MAX_DEPTH}, got {depth!r}")
        return f"{arch_l}-{organ_l}-{modality_l}"
    return f"{arch_l}-{organ_l}-{modality_l}-L{depth}"


def family_name(organ: str, modality: str, arch: str = "anunet") -> str:
    """``{arch}-{organ}-{modality}``: the registered names without ``-L{depth}`` (for a network
    with one output, its one registered name)."""
    return registered_model_name(organ, modality, MAX_DEPTH, arch).rsplit("-L", 1)[0]


def family_depths(arch: str) -> tuple[int, ...]:
    """The depths a family registers: 1..4 for the nested networks, (4,) for the others."""
    return DEPTHS if str(arch).lower() in NESTED_ARCHS else (MAX_DEPTH,)


def parse_registered_name(name: str) -> ModelName | None:
    """The :class:`ModelName` of one registered model's name (depth 4 for a network with one
    output), or None for any other name (a nested family without ``-L{d}`` included)."""
    parsed = _parse(name)
    if parsed is None:
        return None
    if parsed.arch in NESTED_ARCHS:
        return parsed if parsed.depth is not None else None
    return parsed._replace(depth=MAX_DEPTH)


def _parse(name: str) -> ModelName | None:
    match = _FAMILY_PATTERN.fullmatch(str(name).strip())
    if match is None or match["arch"] not in ARCHS:
        return None
    depth = None if match["depth"] is None else int(match["depth"])
    if depth is not None and (depth not in DEPTHS or match["arch"] not in NESTED_ARCHS):
        return None
    return ModelName(match["organ"], match["modality"].upper(), depth, match["arch"])


def parse_model_family(name: str) -> ModelName:
    """The :class:`ModelName` ``(organ, modality, depth, arch)`` of a family name
    ``{arch}-{organ}-{modality}`` (depth None for a nested network, 4 for one with one output)
    or of one registered depth ``{arch}-{organ}-{modality}-L{depth}``, e.g.
    ``parse_model_family("anunet-liver-ct") == ("liver", "CT", None, "anunet")``."""
    parsed = _parse(name)
    if parsed is None:
        raise RegistryError(
            f"model must be a family name like 'anunet-liver-ct' (or one depth, 'anunet-liver-ct-L2'; a baseline "
            f"as {', '.join(a + '-liver-ct' for a in ARCHS if a != 'anunet')}), got {name!r}"
        )
    return parsed if parsed.arch in NESTED_ARCHS else parsed._replace(depth=MAX_DEPTH)


def check_run_id(run_id: object) -> str:
    """``run_id`` if it looks like an MLflow run id (safe to quote in a search filter)."""
    if not isinstance(run_id, str) or not _RUN_ID_PATTERN.match(run_id):
        raise RegistryError(f"not an MLflow run id: {run_id!r}")
    return run_id
