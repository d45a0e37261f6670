"""Which registered model the job runs: ``--model`` and the depth flags -> a policy -> one depth.

:func:`depth_policy` is pure (it parses names and flags); :func:`select_model` applies it to
the registry's per-depth tags and loads the chosen depth's weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anunet_platform import registry
from anunet_platform.segment.config import SegmentConfig, SegmentError
from anunet_platform.selection import DepthChoice, DepthPolicy, candidates_from_registry, choose_depth

__all__ = ["SelectedModel", "depth_policy", "model_uri", "select_model"]

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

    @property
    def depth(self) -> int:
        return self.choice.depth

    @property
    def model_version(self) -> str:
        return model_uri(self.registered.name, self.registered.version)


def depth_policy(config: SegmentConfig) -> tuple[str, str, DepthPolicy]:
    """``(organ, modality, policy)`` of ``--model`` and the depth flags.

    A model name with a depth (``anunet-liver-ct-L3``) fixes that depth; ``--depth`` may then
    only be ``auto`` or the same depth (:class:`SegmentError` otherwise).
    """
    organ, modality, named_depth = registry.parse_model_family(config.model)
    depth_flag = config.depth
    if named_depth is not None:
        if str(depth_flag).lower() not in ("auto", str(named_depth)):
            raise SegmentError(f"--model {config.model} names depth {named_depth} but --depth is {depth_flag}")
        depth_flag = named_depth
    return organ, modality, DepthPolicy.from_flags(depth_flag, config.max_dice_drop, config.latency_budget_ms)


def select_model(config: SegmentConfig) -> SelectedModel:
    """Resolve ``--model``, apply the depth policy to the registry's tags and load that depth.

    The per-depth versions come from :func:`registry.production_depths`: those with the alias;
    a depth without it is refused unless ``--allow-unpromoted`` (then its newest version, with
    a warning). The caller logs the choice and its reason.
    """
    organ, modality, policy = depth_policy(config)
    depths = registry.production_depths(
        organ, modality, alias=config.alias, uri=config.tracking_uri, fallback_to_newest=config.allow_unpromoted
    )
    if policy.depth is not None:
        if policy.depth not in depths:
            raise SegmentError(
                f"--depth {policy.depth}: {registry.registered_model_name(organ, modality, policy.depth)} is not registered"
            )
        depths = {policy.depth: depths[policy.depth]}
    choice = choose_depth(candidates_from_registry(depths), policy)
    chosen = depths[choice.depth]
    network, _ = registry.load_registered(chosen.name, version=chosen.version, uri=config.tracking_uri)
    input_size = int(chosen.tags.get("input_size", "0") or 0)
    if input_size < 16:
        raise SegmentError(f"{chosen.name} version {chosen.version} has no input_size tag (registered elsewhere?)")
    logger.debug("depth L%d (%s v%s): %s", choice.depth, chosen.name, chosen.version, choice.reason)
    return SelectedModel(
        organ=organ,
        modality=modality,
        registered=chosen,
        choice=choice,
        input_size=input_size,
        config={"in_channels": network.in_channels, "filters": list(network.filters), "depth": network.depth},
        state_dict={k: v.detach().cpu().numpy() for k, v in network.state_dict().items()},
    )
