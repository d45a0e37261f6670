"""The Ray Data pipeline over the cases to segment: the stages wired to the actor plan.

    from_items (one row per case) -> map(read_stage) -> map_batches(SliceSegmenter, actor pool)
    -> map(write_stage) -> each finished case's manifest rows (one per organ), streamed back

Each scan is read and preprocessed once, whatever the number of organs: every actor holds all
the organs' networks and runs them on the same slices.

Memory: the archive is streamed (one row per case, Ray Data's backpressure bounds the volumes
in flight); the driver only holds the small result rows.

Poison scans: a case whose task or actor call kills its worker process (out of memory, a crash
in a native decoder) is retried :data:`CASE_RETRIES` times, not forever (Ray Data's defaults),
and then dropped from the stream alone (``max_errored_blocks``: one case per block), so the
other cases go on. The driver makes each case that never came back a ``failed`` row saying so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from anunet_platform.cluster import cluster_shape
from anunet_platform.segment.config import SegmentConfig
from anunet_platform.segment.model import SelectedModel
from anunet_platform.segment.outputs import organ_outputs
from anunet_platform.segment.plan import IO_RESERVE_SMALL, ActorPlan, plan_actors
from anunet_platform.segment.stages import CaseContext, SliceSegmenter, read_stage, write_lost_case, write_stage

__all__ = ["CASE_RETRIES", "IO_TASK_CPUS", "segment_cases"]

logger = logging.getLogger(__name__)

IO_TASK_CPUS = IO_RESERVE_SMALL / 2  # reading and writing: light next to the network
CASE_RETRIES = 2
"""Retries of a case whose worker process died (a killed or crashed task or actor call)."""


def segment_cases(
    todo: list[dict[str, Any]], selected: list[SelectedModel], config: SegmentConfig
) -> tuple[ActorPlan, Iterator[list[dict[str, Any]]]]:
    """The actor plan for the connected cluster, and an iterator of each finished case's
    manifest rows, one per organ (cases in the order they finish). Ray must be initialised."""
    plan = plan_actors(*cluster_shape(), config.use_gpu, config.num_actors, config.cpus_per_actor, cases=len(todo))
    logger.info(
        "segment: %d actors x (%g CPU, %g GPU, %d threads), batch %d slices",
        plan.num_actors, plan.cpus, plan.gpus, plan.threads, config.batch_size,
    )
    return plan, _run(todo, selected, config, plan)


def _run(todo: list[dict[str, Any]], selected: list[SelectedModel], config: SegmentConfig,
         plan: ActorPlan) -> Iterator[list[dict[str, Any]]]:
    import ray

    first = selected[0]
    ctx = CaseContext(
        out=config.out, organs=tuple(organ_outputs(selected)), size=first.input_size, previews=config.previews,
        formats=config.output_format,
    )
    weights = ray.put([s.state_dict for s in selected])
    dataset = ray.data.from_items(todo, override_num_blocks=len(todo))
    dataset = dataset.map(
        read_stage,
        fn_kwargs={"organ": first.organ, "modality": first.modality, "size": first.input_size,
                   "max_voxels": config.max_voxels, "dicom_headers": "dicom-seg" in config.output_format},
        num_cpus=IO_TASK_CPUS,
        max_retries=CASE_RETRIES,
    )
    dataset = dataset.map_batches(
        SliceSegmenter,
        fn_constructor_kwargs={
            # wrapped in a list: a nested reference, so a restarted actor fetches it again
            # rather than needing its constructor arguments kept (ray-project/ray#53727)
            "weights": [weights], "size": first.input_size,
            "config": [dict(s.config, exit_rule=s.exit_rule.to_tags() if s.exit_rule else None) for s in selected],
            "batch_size": config.batch_size, "use_gpu": config.use_gpu, "threads": plan.threads,
        },
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        udf_modifying_row_count=False,
        num_cpus=plan.cpus,
        num_gpus=plan.gpus,
        max_task_retries=CASE_RETRIES,
        # each restart follows a death during some case's call, and those are bounded
        max_restarts=(CASE_RETRIES + 1) * len(todo),
    )
    # max_retries/max_task_retries/max_restarts go through ray_remote_args, deprecated in Ray 2.60
    # for named parameters that do not cover retries yet: revisit before Ray 2.64
    dataset = dataset.map(write_stage, fn_kwargs={"ctx": ctx}, num_cpus=IO_TASK_CPUS, max_retries=CASE_RETRIES)
    dataset.context.max_errored_blocks = -1  # a case out of retries is dropped alone (one per block)
    finished = set()
    for row in dataset.iter_rows():
        finished.add(row["case_id"])
        yield json.loads(row["rows"])
    for row in todo:
        if row["case_id"] not in finished:
            yield write_lost_case(row, ctx, CASE_RETRIES + 1)
