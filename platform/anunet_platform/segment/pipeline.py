"""The Ray Data pipeline over the cases to segment: the stages wired to the actor plan.

    from_items (one row per case) -> map(read_stage) -> map_batches(SliceSegmenter, actor pool)
    -> map(write_stage) -> the finished rows, streamed back to the driver

Memory: the archive is streamed (one row per case, Ray Data's backpressure bounds the volumes
in flight); the driver only holds the small result rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from anunet_platform.cluster import cluster_shape
from anunet_platform.segment.config import SegmentConfig
from anunet_platform.segment.model import SelectedModel
from anunet_platform.segment.plan import IO_RESERVE_SMALL, ActorPlan, plan_actors
from anunet_platform.segment.stages import CaseContext, SliceSegmenter, read_stage, write_stage

__all__ = ["IO_TASK_CPUS", "segment_cases"]

logger = logging.getLogger(__name__)

IO_TASK_CPUS = IO_RESERVE_SMALL / 2  # reading and writing: light next to the network


def segment_cases(
    todo: list[dict[str, Any]], selected: SelectedModel, config: SegmentConfig
) -> tuple[ActorPlan, Iterator[dict[str, Any]]]:
    """The actor plan for the connected cluster, and an iterator of each finished case's
    manifest row (in the order they finish). Ray must be initialised."""
    plan = plan_actors(*cluster_shape(), config.use_gpu, config.num_actors, config.cpus_per_actor, cases=len(todo))
    logger.info(
        "segment: %d actors x (%g CPU, %g GPU, %d threads), batch %d slices",
        plan.num_actors, plan.cpus, plan.gpus, plan.threads, config.batch_size,
    )
    return plan, _run(todo, selected, config, plan)


def _run(todo: list[dict[str, Any]], selected: SelectedModel, config: SegmentConfig,
         plan: ActorPlan) -> Iterator[dict[str, Any]]:
    import ray

    ctx = CaseContext(
        out=config.out, depth=selected.depth, model_version=selected.model_version,
        depth_reason=selected.choice.reason, size=selected.input_size, previews=config.previews,
    )
    weights = ray.put(selected.state_dict)
    dataset = ray.data.from_items(todo, override_num_blocks=len(todo))
    dataset = dataset.map(
        read_stage, fn_kwargs={"organ": selected.organ, "modality": selected.modality, "size": selected.input_size},
        num_cpus=IO_TASK_CPUS,
    )
    dataset = dataset.map_batches(
        SliceSegmenter,
        fn_constructor_kwargs={
            # wrapped in a list: a nested reference, so a restarted actor fetches it again
            # rather than needing its constructor arguments kept (ray-project/ray#53727)
            "weights": [weights], "config": selected.config, "size": selected.input_size,
            "batch_size": config.batch_size, "use_gpu": config.use_gpu, "threads": plan.threads,
        },
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        udf_modifying_row_count=False,
        num_cpus=plan.cpus,
        num_gpus=plan.gpus,
    )
    dataset = dataset.map(write_stage, fn_kwargs={"ctx": ctx}, num_cpus=IO_TASK_CPUS)
    yield from dataset.iter_rows()
