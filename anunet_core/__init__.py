"""anunet_core: the science of ANU-Net in plain PyTorch and NumPy (no Ray, no MLflow).

One concept per module: ``model`` (ANU-Net and pruning), ``inference`` (the deployment fast
path), ``loss`` (the hybrid loss of Eq. 8), ``metrics`` (Eq. 9-12 and surface distances),
``volumes`` (NIfTI/DICOM I/O), ``preprocessing`` (shared by training and inference),
``synthetic`` (phantom archives for demos and tests).
"""

from anunet_core.inference import optimize_for_inference
from anunet_core.loss import HybridLoss
from anunet_core.model import ANUNet, AttentionGate, count_parameters, prune

__all__ = ["ANUNet", "AttentionGate", "HybridLoss", "count_parameters", "optimize_for_inference", "prune"]
