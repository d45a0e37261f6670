"""Which registered models the job runs: each ``--model`` and the depth flags -> a policy -> one
depth, and whether its masks are post-processed.

:func:`depth_policy` is pure (it parses names and flags); :func:`select_model` applies it to
the registry's per-depth tags and loads the chosen depth's weights; :func:`select_models` does
so for every ``--model`` (one family per organ, one modality, one input size: each scan is read
and preprocessed once for all of them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anunet_core.baselines import network_config
from anunet_core.exit_rule import ExitRule
from anunet_core.vocabulary import NESTED_ARCHS, ORGAN_MAP_VALUES, ORGANS
from anunet_platform import registry
from anunet_platform.qc import QcThresholds
from anunet_platform.segment.config import SegmentConfig, SegmentError
from anunet_platform.selection import (
    DepthChoice,
    DepthPolicy,
    PostprocessChoice,
    candidates_from_registry,
    choose_depth,
    postprocess_choice,
)

VOLUME_TAGS = ("organ_ml_mean", "organ_ml_std", "organ_ml_cases")

__all__ = ["VOLUME_TAGS", "SelectedModel", "depth_policy", "model_uri", "select_model", "select_models"]

logger = logging.getLogger(__name__)


def model_uri(name: str, version: str) -> str:
    """The manifest's ``model_version``: ``models:/<name>/<version>``, loadable by MLflow."""
    return f"models:/{name}/{version}"


@dataclass(frozen=True)
class SelectedModel:
    """The registered depth the job runs: its registry entry, the choice and the weights."""

    organ: str
    modality: str
    registered: registry.RegisteredDepth
    choice: DepthChoice
    input_size: int
    config: dict[str, Any] = field(repr=False)
    state_dict: dict[str, np.ndarray] = field(repr=False)
    postprocess: PostprocessChoice = PostprocessChoice(False, "off")
    exit_rule: ExitRule | None = None  # --depth adaptive: the version's calibrated per-slice exit rule
    qc: QcThresholds = field(default_factory=QcThresholds)
    volume_tags: dict[str, str] = field(default_factory=dict)  # organ_ml_mean/_std/_cases of the training cases

    @property
    def depth(self) -> int:
        return self.choice.depth

    @property
    def label_value(self) -> int:
        """The organ's value in a label map (:data:`~anunet_core.vocabulary.ORGAN_MAP_VALUES`)."""
        return ORGAN_MAP_VALUES[self.organ]

    @property
    def model_version(self) -> str:
        return model_uri(self.registered.name, self.registered.version)


def depth_policy(config: SegmentConfig, model: str | None = None) -> tuple[str, str, DepthPolicy]:
    """``(organ, modality, policy)`` of one ``--model`` (default: the first) and the depth flags.

    A model name with a depth (``anunet-liver-ct-L3``) fixes that depth; ``--depth`` may then
    only be ``auto`` or the same depth (:class:`SegmentError` otherwise). A network with one
    output (``unet-liver-ct``: :mod:`anunet_core.baselines`) has one depth, 4: ``--depth`` may
    be ``auto`` or 4, and ``adaptive`` is refused (it has no shallower head to stop at).
    """
    model = config.model[0] if model is None else model
    name = registry.parse_model_family(model)
    depth_flag = config.depth
    if name.depth is not None:
        if name.arch not in NESTED_ARCHS and str(depth_flag).lower() == "adaptive":
            raise SegmentError(f"--depth adaptive: {model} has one output and no shallower head to stop at; "
                               "use --depth auto, or a nested family (anunet-..., unetpp-...)")
        if str(depth_flag).lower() not in ("auto", str(name.depth)):
            what = "names depth" if name.arch in NESTED_ARCHS else "has one output, of depth"
            raise SegmentError(f"--model {model} {what} {name.depth} but --depth is {depth_flag}")
        depth_flag = name.depth
    return name.organ, name.modality, DepthPolicy.from_flags(depth_flag, config.max_dice_drop, config.latency_budget_ms)


def select_models(config: SegmentConfig) -> list[SelectedModel]:
    """Every ``--model``, selected (:func:`select_model`), in the order of
    :data:`~anunet_core.vocabulary.ORGANS` (the label map's values).

    Several models must name different organs, one modality (NIfTI scans carry none: a run
    reads its archive as that modality) and one input size (each scan is preprocessed once for
    all of them): :class:`SegmentError` otherwise, before any weights are loaded.
    """
    families = [(model, *depth_policy(config, model)) for model in config.model]
    if len(families) > 1:
        organs = [organ for _, organ, _, _ in families]
        unknown = [o for o in organs if o not in ORGANS]
        if unknown:
            raise SegmentError(f"--model: organ {unknown[0]!r} has no label-map value; the organs are {', '.join(ORGANS)}")
        if len(set(organs)) != len(organs):
            twice = next(o for o in organs if organs.count(o) > 1)
            raise SegmentError(f"--model: two families segment the {twice}; pass one per organ")
        modalities = sorted({modality for _, _, modality, _ in families})
        if len(modalities) > 1:
            raise SegmentError(
                f"--model: the families are of {' and '.join(modalities)}; one run segments one modality "
                "(run one job per modality)"
            )
    selected = sorted((select_model(config, model) for model, *_ in families), key=lambda s: ORGANS.index(s.organ)
                      if s.organ in ORGANS else len(ORGANS))
    sizes = sorted({s.input_size for s in selected})
    if len(sizes) > 1:
        listing = ", ".join(f"{s.registered.name} {s.input_size} px" for s in selected)
        raise SegmentError(f"--model: the models were trained at different input sizes ({listing}); "
                           "a run preprocesses each scan once, at one size")
    return selected


def select_model(config: SegmentConfig, model: str | None = None) -> SelectedModel:
    """Resolve one ``--model`` (default: the first), apply the depth policy to the registry's
    tags and load that depth; the post-processing follows ``--postprocess`` and the version's
    registered decision (:func:`~anunet_platform.selection.postprocess_choice`).

    The per-depth versions come from :func:`registry.production_depths`: those with the alias;
    a depth without it is refused unless ``--allow-unpromoted`` (then its newest version, with
    a warning). The caller logs the choice and its reason.
    """
    organ, modality, policy = depth_policy(config, model)
    arch = registry.parse_model_family(config.model[0] if model is None else model).arch
    depths = registry.production_depths(
        organ, modality, alias=config.alias, uri=config.tracking_uri, fallback_to_newest=config.allow_unpromoted,
        arch=arch,
    )
    if policy.depth is not None:
        if policy.depth not in depths:
            raise SegmentError(
                f"--depth {policy.depth}: {registry.registered_model_name(organ, modality, policy.depth, arch)} is not registered"
            )
        depths = {policy.depth: depths[policy.depth]}
    choice = choose_depth(candidates_from_registry(depths), policy)
    chosen = depths[choice.depth]
    network, _ = registry.load_registered(chosen.name, version=chosen.version, uri=config.tracking_uri)
    input_size = int(chosen.tags.get("input_size", "0") or 0)
    if input_size < 16:
        raise SegmentError(f"{chosen.name} version {chosen.version} has no input_size tag (registered elsewhere?)")
    exit_rule = None
    if choice.adaptive:
        try:
            exit_rule = ExitRule.from_tags(chosen.tags)
        except ValueError as exc:
            raise SegmentError(
                f"--depth adaptive: {chosen.name} version {chosen.version} has no calibrated exit rule ({exc}); "
                "register it again with this version of jobs/train.py, or use --depth auto"
            ) from None
    try:
        qc = QcThresholds.from_tags(chosen.tags)
    except ValueError as exc:
        raise SegmentError(f"{chosen.name} version {chosen.version}: bad QC tags: {exc}") from None
    logger.debug("depth L%d (%s v%s): %s", choice.depth, chosen.name, chosen.version, choice.reason)
    return SelectedModel(
        organ=organ,
        modality=modality,
        registered=chosen,
        choice=choice,
        input_size=input_size,
        postprocess=postprocess_choice(config.postprocess, chosen.tags),
        exit_rule=exit_rule,
        qc=qc,
        volume_tags={k: chosen.tags[k] for k in VOLUME_TAGS if k in chosen.tags},
        config=network_config(network),
        state_dict={k: v.detach().cpu().numpy() for k, v in network.state_dict().items()},
    )
