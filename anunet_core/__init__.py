"""anunet_core: the science of ANU-Net in plain PyTorch and NumPy (no Ray, no MLflow).

One concept per module (README "Architecture" has the whole tree):

- ``vocabulary``: organs, modalities, depths and label tables, with their checks;
- ``errors``: the one formatter of error reasons (:func:`~anunet_core.errors.one_line`);
- ``model`` (ANU-Net and pruning), ``baselines`` (the five networks of the paper's comparison,
  one per module, and ``build_network(arch)``), ``inference`` (the deployment fast path),
  ``anytime`` (the incremental forward, one depth at a time), ``adaptive`` (per-slice adaptive
  depth), ``loss`` (the hybrid loss of Eq. 8), ``metrics`` (Eq. 9-12 and surface distances),
  ``augmentation``;
- ``io`` (volumes, NIfTI, DICOM series, DICOM SEG, label alignment, atomic writes),
  ``archives`` (every archive layout), ``preprocessing`` (shared by training and inference;
  one organ's mask or several organs' label map back on the scan), ``postprocessing`` (each
  organ's largest components), ``statistics`` (organ volume, intensity, position, field-of-view
  cut), ``preview``;
- ``synthetic`` (phantom archives for demos and tests).

``from anunet_core import ANUNet, prune, HybridLoss`` works as always; the names load their
modules (and PyTorch) on first use, so importing ``anunet_core.vocabulary`` alone stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ANUNet": "anunet_core.model",
    "AttentionGate": "anunet_core.model",
    "count_parameters": "anunet_core.model",
    "prune": "anunet_core.model",
    "UNet": "anunet_core.baselines.unet",
    "R2UNet": "anunet_core.baselines.r2unet",
    "UNetPlusPlus": "anunet_core.baselines.unetpp",
    "AttentionUNet": "anunet_core.baselines.attunet",
    "AttentionR2UNet": "anunet_core.baselines.attr2unet",
    "build_network": "anunet_core.baselines",
    "HybridLoss": "anunet_core.loss",
    "optimize_for_inference": "anunet_core.inference",
    "NodeCache": "anunet_core.anytime",
    "anytime_deepen": "anunet_core.anytime",
    "anytime_start": "anunet_core.anytime",
    "cache_bytes_per_slice": "anunet_core.anytime",
    "depth_gflops": "anunet_core.anytime",
    "SliceRecord": "anunet_core.adaptive",
    "segment_adaptive": "anunet_core.adaptive",
    "segment_fixed": "anunet_core.adaptive",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
