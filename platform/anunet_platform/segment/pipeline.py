"""The Ray Data pipeline over the cases to segment: the stages wired to the actor plan.

    GPU:  from_items (one row per case) -> map(read_stage) -> map_batches(SliceSegmenter, actor pool)
          -> map(write_stage) -> each finished case's manifest rows (one per organ), streamed back
    CPU:  from_items -> map(CaseSegmenter, actor pool: each actor reads, segments and writes its
          cases) -> the same rows

Each scan is read and preprocessed once, whatever the number of organs: every actor holds all
the organs' networks and runs them on the same slices. Why CPU runs keep the reading and
writing in the actors: :mod:`~anunet_platform.segment.stages`.

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
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from anunet_platform.cluster import cluster_shape
from anunet_platform.segment.config import SegmentConfig
from anunet_platform.segment.model import SelectedModel
from anunet_platform.segment.outputs import organ_outputs
from anunet_platform.segment.plan import ActorPlan, plan_actors
from anunet_platform.segment.stages import (
    CaseContext,
    CaseSegmenter,
    SliceSegmenter,
    read_stage,
    write_lost_case,
    write_stage,
)

__all__ = ["CASE_RETRIES", "IO_TASK_CPUS", "CaseTimes", "segment_cases"]

logger = logging.getLogger(__name__)

IO_TASK_CPUS = 0.25  # GPU runs' reading and writing tasks: light next to the network
CASE_RETRIES = 2
"""Retries of a case whose worker process died (a killed or crashed task or actor call)."""


@dataclass(frozen=True)
class CaseTimes:
    """Where one case's time went: seconds in each stage, and when the actor that segmented it
    had loaded its models (wall clock, NaN for a case that never reached an actor)."""

    read_seconds: float = 0.0
    segment_seconds: float = 0.0
    write_seconds: float = 0.0
    actor_ready_at: float = math.nan


def segment_cases(
    todo: list[dict[str, Any]], selected: list[SelectedModel], config: SegmentConfig
) -> tuple[ActorPlan, Iterator[tuple[list[dict[str, Any]], CaseTimes]]]:
    """The actor plan for the connected cluster, and an iterator of each finished case's
    manifest rows (one per organ) with its :class:`CaseTimes` (cases in the order they
    finish). Ray must be initialised."""
    plan = plan_actors(*cluster_shape(), config.use_gpu, config.num_actors, config.cpus_per_actor, cases=len(todo))
    logger.info(
        "segment: %d actors x (%g CPU, %g GPU, %d threads), batch %d slices%s",
        plan.num_actors, plan.cpus, plan.gpus, plan.threads, config.batch_size,
        "" if config.use_gpu else "; each actor reads and writes its own cases",
    )
    return plan, _run(todo, selected, config, plan)


def _run(todo: list[dict[str, Any]], selected: list[SelectedModel], config: SegmentConfig,
         plan: ActorPlan) -> Iterator[tuple[list[dict[str, Any]], CaseTimes]]:
    import ray

    first = selected[0]
    ctx = CaseContext(
        out=config.out, organs=tuple(organ_outputs(selected)), size=first.input_size, previews=config.previews,
        formats=config.output_format,
    )
    read = {"organ": first.organ, "modality": first.modality, "size": first.input_size,
            "max_voxels": config.max_voxels, "dicom_headers": "dicom-seg" in config.output_format}
    model = {
        # wrapped in a list: a nested reference, so a restarted actor fetches it again
        # rather than needing its constructor arguments kept (ray-project/ray#53727)
        "weights": [ray.put([s.state_dict for s in selected])], "size": first.input_size,
        "config": [dict(s.config, exit_rule=s.exit_rule.to_tags() if s.exit_rule else None) for s in selected],
        "batch_size": config.batch_size, "threads": plan.threads,
    }
    actors = dict(
        # CPU: one case at a time per actor, none queued behind it: an actor that dies on a
        # poison scan it reads must not take the retries of innocent cases waiting on it
        compute=ray.data.ActorPoolStrategy(size=plan.num_actors,
                                           max_tasks_in_flight_per_actor=None if config.use_gpu else 1),
        num_cpus=plan.cpus,
        num_gpus=plan.gpus,
        max_task_retries=CASE_RETRIES,
        # each restart follows a death during some case's call, and those are bounded
        max_restarts=(CASE_RETRIES + 1) * len(todo),
    )
    # max_retries/max_task_retries/max_restarts go through ray_remote_args, deprecated in Ray 2.60
    # for named parameters that do not cover retries yet: revisit before Ray 2.64
    dataset = ray.data.from_items(todo, override_num_blocks=len(todo))
    if config.use_gpu:
        dataset = dataset.map(read_stage, fn_kwargs=read, num_cpus=IO_TASK_CPUS, max_retries=CASE_RETRIES)
        dataset = dataset.map_batches(
            SliceSegmenter, fn_constructor_kwargs=model | {"use_gpu": True}, batch_size=1, batch_format="numpy",
            udf_modifying_row_count=False, **actors,
        )
        dataset = dataset.map(write_stage, fn_kwargs={"ctx": ctx}, num_cpus=IO_TASK_CPUS, max_retries=CASE_RETRIES)
    else:
        dataset = dataset.map(CaseSegmenter, fn_constructor_kwargs=model | {"read": read, "ctx": ctx}, **actors)
    dataset.context.max_errored_blocks = -1  # a case out of retries is dropped alone (one per block)
    finished = set()
    for row in dataset.iter_rows():
        finished.add(row["case_id"])
        yield json.loads(row["rows"]), CaseTimes(
            float(row["read_seconds"]), float(row["segment_seconds"]), float(row["write_seconds"]),
            float(row["actor_ready_at"]),
        )
    for row in todo:
        if row["case_id"] not in finished:
            yield write_lost_case(row, ctx, CASE_RETRIES + 1), CaseTimes()
