"""Nightly batch segmentation of a scan archive with Ray Data: one or several organs (one model
family each), each at an automatically chosen depth.

    discover cases (names only) -> skip those done with the same model versions    (resume)
    -> Ray Data, streaming, one row per case:                                      (pipeline)
         read + preprocess once (tasks; the same code as ingest)                   (stages)
      -> every organ's ANU-Net at its chosen depth (an actor pool: the models are loaded
         once per actor; CPU or GPU actors; slices in batches of ``batch_size``)
      -> restore the source geometry, threshold at 0.5, overlaps to the more probable organ,
         post-process, organ statistics; write the masks (a label map with several organs),
         the DICOM SEG, the preview and the case's record (tasks; every write atomic)
    -> OUT/manifest.parquet (one row per case and organ), OUT/statistics.json and
       OUT/summary.json                                                            (job)

The output layout and the manifest's columns are :mod:`anunet_platform.contracts`'s (the
evaluate job reads them from there). Modules, each importable without Ray:

- ``config``: :class:`SegmentConfig` (one field per flag) and :class:`SegmentError`;
- ``plan``: :func:`plan_actors`, the actor pool for a cluster's shape (pure);
- ``model``: each ``--model`` and the depth flags -> the registered depth to run;
- ``outputs``: what each organ writes, and how a mask names the models that made it;
- ``resume``: which cases an earlier run finished, and the records that say so;
- ``stages``: one case's read, segment (the actor) and write steps;
- ``pipeline``: the stages as a Ray Data pipeline on the planned actor pool;
- ``job``: :func:`run_segmentation`, the manifest and the summary.

A scan that cannot be read or segmented is a ``failed`` row with a one-line reason
(:func:`anunet_core.errors.one_line`); the other cases go on. A killed run leaves records for
the finished cases only, so the rerun does the rest.
"""

from anunet_platform.segment.config import SegmentConfig, SegmentError
from anunet_platform.segment.job import SegmentSummary, run_segmentation, write_manifest
from anunet_platform.segment.model import SelectedModel, depth_policy, model_uri, select_model, select_models
from anunet_platform.segment.outputs import OrganOutput
from anunet_platform.segment.plan import ActorPlan, plan_actors
from anunet_platform.segment.resume import ResumePlan, image_signature, is_done, plan_resume, read_record, write_record

__all__ = [
    "ActorPlan",
    "OrganOutput",
    "ResumePlan",
    "SegmentConfig",
    "SegmentError",
    "SegmentSummary",
    "SelectedModel",
    "depth_policy",
    "image_signature",
    "is_done",
    "model_uri",
    "plan_actors",
    "plan_resume",
    "read_record",
    "run_segmentation",
    "select_model",
    "select_models",
    "write_manifest",
    "write_record",
]
