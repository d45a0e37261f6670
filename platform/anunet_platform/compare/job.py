"""The comparison job: train every architecture (and seed) as one Ray Tune grid, evaluate each on
the test split, write Tables 2-6 and Fig. 13, log them under one MLflow parent run."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from anunet_core.baselines import at_depth, output_depths
from anunet_core.errors import one_line
from anunet_core.inference import optimize_for_inference
from anunet_core.io import write_atomic
from anunet_core.model import count_parameters
from anunet_core.vocabulary import ARCH_NAMES, MAX_DEPTH, NESTED_ARCHS
from anunet_platform import registry
from anunet_platform.cluster import init_ray
from anunet_platform.compare.config import CompareConfig
from anunet_platform.compare.evaluation import CaseScore, score_test_split, write_case_scores
from anunet_platform.compare.tables import (
    MethodRow,
    Table6Row,
    depth_rows,
    format_markdown,
    method_rows,
    plot_fig13,
    write_comparison_csv,
    write_table6_csv,
)
from anunet_platform.compare.trial import compare_trial, record_path, trial_run_name
from anunet_platform.contracts import DatasetSummary, FailedFractionExceeded, split_files
from anunet_platform.precision import autocast
from anunet_platform.train import (
    TrainConfig,
    TrainResult,
    check_dataset,
    default_storage_path,
    load_model_weights,
    register_result,
)
from anunet_platform.tune.sizing import TRIAL_RESOURCES, max_concurrent_trials

__all__ = ["COMPARISON_CSV", "COMPARISON_MD", "FIG13", "TABLE6_CSV", "CompareOutcome", "comparison_name", "run_compare"]

logger = logging.getLogger(__name__)

COMPARISON_MD, COMPARISON_CSV, TABLE6_CSV, FIG13 = "comparison.md", "comparison.csv", "table6.csv", "fig13.png"
EVALUATION_DIR = "evaluation"  # one CSV of per-case scores per trained network: {arch}-s{seed}.csv
TIMING_BATCH = 16


def comparison_name(config: CompareConfig, dataset_checksum: str) -> str:
    """``--name``, else derived from the data and settings (the same run resumes)."""
    archs = "all" if len(config.archs) == 6 else "-".join(config.archs)
    return config.name or f"compare-{dataset_checksum[:8]}-{archs}-e{config.epochs}-s{config.seeds}"


@dataclass
class Trained:
    """One finished training of the grid: its architecture, seed and best epoch."""

    arch: str
    seed: int
    result: TrainResult


@dataclass
class CompareOutcome:
    name: str
    path: Path
    rows: list[MethodRow]
    table6: dict[str, list[Table6Row]]
    scores: list[CaseScore]
    files: dict[str, Path]
    mlflow_parent_run_id: str
    errors: dict[str, str] = field(default_factory=dict)
    registered: dict[str, list] = field(default_factory=dict)
    text: str = ""


def build_tuner(config: CompareConfig, train_config: TrainConfig, name: str, path: Path, experiment_id: str,
                parent_run_id: str, concurrent: int):
    """The grid's ``Tuner`` (restored when ``path`` holds one: the driver came back): one trial
    per ``(arch, seed)``, at most ``concurrent`` at once (held by the search algorithm: Tune
    ignores ``TuneConfig(max_concurrent_trials=...)`` for it)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    param_space = {
        "arch": tune.grid_search(list(config.archs)),
        "seed": tune.grid_search(list(range(config.seeds))),
        "train_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(train_config).items()},
        "mlflow_experiment_id": experiment_id,
        "mlflow_parent_run_id": parent_run_id,
        "name": name,
        "experiment_path": str(path),
    }
    trainable = tune.with_resources(compare_trial, TRIAL_RESOURCES)
    if tune.Tuner.can_restore(str(path)):
        logger.info("resuming comparison %s from %s", name, path)
        return tune.Tuner.restore(str(path), trainable=trainable, param_space=param_space, resume_unfinished=True,
                                  resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=1, search_alg=BasicVariantGenerator(max_concurrent=concurrent)),
        run_config=tune.RunConfig(name=name, storage_path=str(path.parent),
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )


def root_cause(error: BaseException) -> str:
    """The line that says what went wrong in a trial's error: Ray wraps a worker's exception in
    its traceback, whose last line is the original ``Type: message`` (one line, at most 300
    characters)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else repr(error), limit=300)


def collect(config: CompareConfig, path: Path, results) -> tuple[list[Trained], dict[str, str]]:
    """The trainings that finished (their records) and, per architecture, why one did not."""
    errors_by_point = {}
    for result in results:
        arch, seed = result.config.get("arch"), result.config.get("seed")
        if result.error is not None:
            errors_by_point[(arch, seed)] = root_cause(result.error)
    trained, errors = [], {}
    for arch, seed in config.grid():
        record = record_path(path, arch, seed)
        if record.is_file():
            data = json.loads(record.read_text())
            trained.append(Trained(arch, seed, TrainResult(**{k: data[k] for k in TrainResult.__dataclass_fields__})))
        else:
            reason = errors_by_point.get((arch, seed), "the training left no record")
            errors.setdefault(arch, f"seed {seed}: {reason}")
    return trained, errors


def timing_device(use_gpu: bool) -> torch.device:
    """Where Table 6 is timed: this node's GPU when the comparison runs on GPUs and the driver
    has one, else its CPU."""
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def time_depths(model: torch.nn.Module, size: int, timed_slices: int, slices: int,
                device: torch.device = torch.device("cpu")) -> dict[int, float]:
    """Seconds to segment ``slices`` slices at each output depth of ``model``: its BatchNorm-folded
    network at that depth (as the segment job runs it, bf16 where this CPU or GPU is fast at it)
    on ``device``, over ``timed_slices`` random ``size x size`` slices in batches of 16 after one
    warm-up batch, scaled to ``slices``."""
    x = torch.randn(timed_slices, model.in_channels, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    seconds = {}
    for depth in output_depths(model):
        net = optimize_for_inference(model, depth).to(device)
        with autocast(device):
            net(x[:TIMING_BATCH])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for begin in range(0, timed_slices, TIMING_BATCH):
                net(x[begin : begin + TIMING_BATCH])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
        seconds[depth] = elapsed * slices / timed_slices
    return seconds


def evaluate(config: CompareConfig, trained: list[Trained], summary: DatasetSummary, out: Path,
             parent_uri: str) -> tuple[list[CaseScore], dict[str, list[Table6Row]], dict[str, int], dict[str, Path]]:
    """Every trained network on the test split (a per-case CSV each, its means logged to its
    child run), then Table 6 for the nested architectures (timed on this node, one seed's network)."""
    scores, table6, params, files = [], {}, {}, {}
    for item in trained:
        model = load_model_weights(Path(item.result.checkpoint_path), item.arch)
        own = score_test_split(model, config.data, summary.organ, item.arch, item.seed)
        scores.extend(own)
        files[f"{item.arch}-s{item.seed}"] = write_case_scores(own, out / EVALUATION_DIR / f"{item.arch}-s{item.seed}.csv")
        full = [s for s in own if s.depth == MAX_DEPTH]
        if item.result.mlflow_run_id and full:
            registry.tracking.log_run_summary(item.result.mlflow_run_id, metrics={
                f"test_{k}": float(np.mean([getattr(s, k) for s in full])) for k in ("dice", "iou", "precision", "recall")
            }, uri=parent_uri)
        params.setdefault(item.arch, count_parameters(model))
        if item.arch in NESTED_ARCHS and item.arch not in table6:
            seconds = time_depths(model, summary.size, config.timed_slices, config.table6_slices,
                                  timing_device(config.use_gpu))
            depth_params = {d: count_parameters(at_depth(model, d)) for d in output_depths(model)}
            table6[item.arch] = (seconds, depth_params)
    rows6 = {arch: depth_rows(scores, arch, seconds, depth_params, config.table6_slices, config.timed_slices)
             for arch, (seconds, depth_params) in table6.items()}
    return scores, rows6, params, files


def title_of(config: CompareConfig, summary: DatasetSummary, name: str, scores: list[CaseScore]) -> str:
    cases = len({s.case_id for s in scores})
    return (f"{name}: {summary.organ} {summary.modality}, {cases} test cases, {config.seeds} seed(s), "
            f"{config.epochs} epochs at {summary.size} px")


def run_compare(config: CompareConfig) -> CompareOutcome:
    """Train the grid (or resume it), evaluate, write and log the tables; with ``register``,
    register every trained network. A training that failed keeps its row (marked failed), and
    the job then ends with :class:`~anunet_platform.contracts.FailedFractionExceeded` (exit 1)
    after writing everything."""
    summary = check_dataset(config.data)
    split_files(config.data, "test")  # the tables are on the test split: refuse a dataset without one now
    tracking = registry.tracking_uri()
    registry.check_tracking_server(tracking)
    init_ray()
    import ray

    name = comparison_name(config, summary.checksum)
    storage = Path(config.storage_path) if config.storage_path else default_storage_path()
    path = storage / name
    path.mkdir(parents=True, exist_ok=True)
    out = Path(config.out) if config.out else path
    resources = ray.cluster_resources()
    fits = max_concurrent_trials(resources.get("CPU", 0), resources.get("GPU", 0), config)
    concurrent = min(config.max_concurrent_trials or fits, config.num_samples)
    experiment_id, parent = registry.tracking.start_tuning_run(config.experiment, name, summary.checksum, uri=tracking)
    registry.tracking.log_params(parent, {"archs": ",".join(config.archs), "seeds": config.seeds, "epochs": config.epochs,
                                          "data": str(config.data), "dataset": summary.checksum}, uri=tracking)
    logger.info("comparison %s: %d trainings (%s x %d seed(s)), at most %d at once; MLflow parent run %s", name,
                config.num_samples, ", ".join(config.archs), config.seeds, concurrent, parent)
    train_config = TrainConfig(
        data=config.data, epochs=config.epochs, num_workers=config.num_workers, use_gpu=config.use_gpu,
        cpus_per_worker=config.cpus_per_worker, batch_size=config.batch_size, cache_data=config.cache_data,
        learning_rate=config.learning_rate, alpha=config.alpha, gamma=config.gamma, storage_path=path / "train",
        experiment=config.experiment, tracking_uri=tracking, max_failures=1,
    )
    results = build_tuner(config, train_config, name, path, experiment_id, parent, concurrent).fit()
    trained, errors = collect(config, path, results)

    scores, table6, params, case_files = evaluate(config, trained, summary, out, tracking)
    rows = method_rows(scores, config.archs, params=params, errors=errors)
    title = title_of(config, summary, name, scores)
    text = format_markdown(title, rows, table6)
    files = {
        "table": write_atomic(out / COMPARISON_MD, lambda tmp: tmp.write_text(text)),
        "csv": write_comparison_csv(rows, out / COMPARISON_CSV),
    }
    if table6:
        files["table6"] = write_table6_csv([r for rs in table6.values() for r in rs], out / TABLE6_CSV)
        files["fig13"] = plot_fig13(table6, out / FIG13, f"{title}\n(Fig. 13: area = parameters)")
    metrics = {f"{metric}_{r.arch}": getattr(r, f"{metric}_mean") for r in rows for metric in ("dice", "iou")
               if np.isfinite(getattr(r, f"{metric}_mean"))}
    registry.tracking.log_run_summary(parent, metrics=metrics, files=[*files.values(), *case_files.values()], uri=tracking)
    logger.info("comparison %s (%s)\n%s\nfiles: %s", name, out, text, ", ".join(str(p) for p in files.values()))

    outcome = CompareOutcome(name, path, rows, table6, scores, files, parent, errors=errors, text=text)
    if config.register:
        for item in trained:
            run_config = replace(train_config, arch=item.arch, seed=item.seed,
                                 run_name=trial_run_name(name, item.arch, item.seed), mlflow_run_id=item.result.mlflow_run_id)
            outcome.registered[f"{item.arch}-s{item.seed}"] = register_result(item.result, run_config, summary)
    registry.tracking.finish_run(parent, "FAILED" if errors else "FINISHED", uri=tracking)
    if errors:
        failed = ", ".join(f"{ARCH_NAMES[a]} ({e})" for a, e in errors.items())
        raise FailedFractionExceeded(f"{len(errors)} of {len(config.archs)} architectures did not finish training: "
                                     f"{failed}; the tables in {out} hold the others")
    return outcome
