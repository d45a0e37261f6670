"""The tuning experiment: open it, run (or resume) the Tuner, report, close the runs, register."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from anunet_core.errors import one_line
from anunet_core.io import write_atomic
from anunet_core.vocabulary import DEPTHS
from anunet_platform import registry
from anunet_platform.cluster import init_ray
from anunet_platform.train import TrainConfig, TrainResult, check_dataset, default_storage_path, run_training
from anunet_platform.tune.report import (
    TrialRow,
    TuneReport,
    best_trial,
    compare_to_default,
    format_summary,
    format_trials_table,
    observed_concurrency,
    plot_dice_map,
    write_trials_csv,
)
from anunet_platform.tune.search import search_algorithm
from anunet_platform.tune.sizing import TRIAL_RESOURCES, asha_rungs, asha_trial_epochs, max_concurrent_trials
from anunet_platform.tune.space import DEFAULT_POINT, EPOCHS_DONE, METRIC, SEARCH_SPACE, SearchConfig, search_domains
from anunet_platform.tune.trial import tune_trial

__all__ = ["Experiment", "TuneOutcome", "experiment_name", "require_state_api", "run_tuning"]

logger = logging.getLogger(__name__)

TRIALS_CSV, TRIALS_MD, DICE_MAP = "trials.csv", "trials.md", "dice_alpha_gamma.png"
# when each trial started and ended (callbacks.TrialTimes): in a folder of its own, where a
# restored experiment's Tune does not put back the file it found at the restore
TRIAL_TIMES = Path("anunet", "trial_times.json")


def require_state_api() -> None:
    """Refuse to tune on a cluster without Ray's state API (the dashboard).

    A trial ASHA stops is killed together with its TorchTrainer's controller, before that
    controller can free its workers' placement group; Ray Train's ``PlacementGroupCleaner``
    frees it once it sees the controller dead, and it asks the state API. Without the
    dashboard every stopped trial keeps its CPUs (and GPUs) forever and the next trials wait
    for them: a hang, so a clear error instead.

    It asks the connected cluster (its GCS address): without an address the state API guesses
    the cluster from the GCS processes it sees on this host and refuses when there are several
    (two local clusters on one machine: a killed job's successor beside a test's cluster)."""
    import ray
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    try:
        list_nodes(address=address, limit=1, timeout=10, raise_on_missing_output=False)
    except (RayStateApiException, ConnectionError, OSError) as exc:
        raise ValueError(
            "tuning needs Ray's state API (the dashboard): without it the workers of trials ASHA stops are never "
            "freed and the experiment hangs; start Ray with its dashboard (the default; not include_dashboard=False "
            f"or --include-dashboard=false). ({type(exc).__name__})"
        ) from None


def experiment_name(config: SearchConfig, dataset_checksum: str) -> str:
    search = "" if config.search == "random" else f"-{config.search}"
    return config.name or f"tune-{dataset_checksum[:8]}{search}-n{config.num_samples}-e{config.epochs}-s{config.seed}"


@dataclass
class TuneOutcome:
    name: str
    best_config: dict[str, float]
    best_val_dice: float
    trials: int
    mlflow_parent_run_id: str
    report: TuneReport | None = None
    registered: TrainResult | None = None


@dataclass(frozen=True)
class Experiment:
    """Where one tuning experiment lives: its name, its Tune folder (``storage/name``), the
    MLflow store, experiment and parent run, and how many trials run at once."""

    name: str
    storage: Path
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    concurrent: int

    @property
    def path(self) -> Path:
        return self.storage / self.name


def trial_concurrency(config: SearchConfig) -> int:
    """Trials at once: ``--max-concurrent-trials``, else what the connected cluster fits now."""
    import ray

    resources = ray.cluster_resources()
    fits = max_concurrent_trials(resources.get("CPU", 0), resources.get("GPU", 0), config)
    concurrent = config.max_concurrent_trials or fits
    if concurrent > fits:
        logger.warning("--max-concurrent-trials %d: the cluster fits %d now; the others wait for workers (expected "
                       "while an autoscaling cluster grows)", concurrent, fits)
    return concurrent


def log_plan(config: SearchConfig, experiment: Experiment) -> None:
    """What the experiment will run: trials, search, concurrency, ASHA's rungs and budget."""
    rungs = asha_rungs(config.epochs, config.grace_period, config.reduction_factor)
    logger.info(
        "tuning %s: %d trials (%s search), at most %d at once; ASHA rungs at epochs %s of %d: about %.0f trial-epochs "
        "instead of %d", experiment.name, config.num_samples, config.search, experiment.concurrent, rungs or "none",
        config.epochs, asha_trial_epochs(config.num_samples, config.epochs, config.grace_period, config.reduction_factor),
        config.num_samples * config.epochs,
    )


def open_experiment(config: SearchConfig, dataset_checksum: str) -> Experiment:
    """Check the store and the cluster, then open (or reopen) the experiment's MLflow parent run."""
    tracking = registry.tracking_uri()
    registry.check_tracking_server(tracking)
    init_ray()
    require_state_api()
    name = experiment_name(config, dataset_checksum)
    storage = Path(config.storage_path) if config.storage_path else default_storage_path()
    storage.mkdir(parents=True, exist_ok=True)
    experiment_id, parent = registry.tracking.start_tuning_run(config.experiment, name, dataset_checksum, uri=tracking)
    return Experiment(name, storage, tracking, experiment_id, parent, trial_concurrency(config))


def trial_train_config(config: SearchConfig, experiment: Experiment) -> TrainConfig:
    """The training every trial runs, before its searched values (alpha, gamma, learning rate)."""
    return TrainConfig(
        data=config.data, epochs=config.epochs, num_workers=config.num_workers, use_gpu=config.use_gpu,
        cpus_per_worker=config.cpus_per_worker, batch_size=config.batch_size, seed=config.seed,
        cache_data=config.cache_data, storage_path=experiment.path / "train", experiment=config.experiment,
        tracking_uri=experiment.tracking_uri, max_failures=1,
    )


def build_tuner(config: SearchConfig, experiment: Experiment, train_config: TrainConfig):
    """The ``Tuner``: restored when the experiment's folder holds one (the driver came back),
    else new, with ASHA, the search algorithm holding the concurrency limit, and
    ``config.max_failures`` retries of a failed trial."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from anunet_platform.tune.callbacks import KeepTrialResults, TrialTimes

    param_space = search_domains(config) | {
        "train_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(train_config).items()},
        "mlflow_experiment_id": experiment.experiment_id,
        "mlflow_parent_run_id": experiment.parent_run_id,
        "name": experiment.name,
    }
    trainable = tune.with_resources(tune_trial, TRIAL_RESOURCES)
    path = experiment.path
    if tune.Tuner.can_restore(str(path)):
        logger.info("resuming tuning experiment %s from %s", experiment.name, path)
        # trials the dead driver left running, or that had failed, run again (resuming their training)
        return tune.Tuner.restore(str(path), trainable=trainable, param_space=param_space, resume_unfinished=True,
                                  resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=config.num_samples,
            max_concurrent_trials=None,  # held by the search algorithm itself (see the module doc)
            # stop_last_trials=False: reaching max_t alone does not kill a trial right after its
            # last report (a rung that falls on max_t still can: close_trial_runs covers it)
            # time: the epochs trained (EPOCHS_DONE), not training_iteration, which a rerun trial starts again
            scheduler=ASHAScheduler(time_attr=EPOCHS_DONE, max_t=config.epochs,
                                    grace_period=config.grace_period, reduction_factor=config.reduction_factor,
                                    stop_last_trials=False),
            search_alg=search_algorithm(config, experiment.concurrent),
            time_budget_s=config.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=experiment.name, storage_path=str(experiment.storage),
            # a failed trial starts again, its TorchTrainer resuming from its latest checkpoint (tune_trial)
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            # before Tune's own loggers, which it appends after these (KeepTrialResults needs it)
            callbacks=[KeepTrialResults(), TrialTimes(path / TRIAL_TIMES)],
        ),
    )


def trial_rows(results, config: SearchConfig, intervals: dict[str, tuple[float, float]]) -> list[TrialRow]:
    """One ``TrialRow`` per Tune result: its configuration, the per-epoch Dice history (one
    value per epoch, however many attempts the trial took) and the best Dice per depth from its
    metrics, and when it ran (``intervals``: ``{trial_id: (start, end)}`` from ``TrialTimes``)
    where known."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        trial_id = str((result.metrics or {}).get("trial_id") or Path(result.path).name)
        if history is None or METRIC not in getattr(history, "columns", ()):
            dice, best = (), {d: math.nan for d in DEPTHS}
        else:
            # one row per epoch, the latest: a trial Tune reran (a failure, a restored experiment)
            # resumed its training, may report an epoch again and restarts training_iteration at 1
            history = history.drop_duplicates("epoch", keep="last").sort_values("epoch")
            dice = tuple(float(v) for v in history[METRIC])
            best = {d: float(history[f"val_dice_L{d}"].max()) for d in DEPTHS}
        point = {k: float(result.config[k]) for k in SEARCH_SPACE}
        started, ended = intervals.get(trial_id, (None, None))
        rows.append(TrialRow(
            trial_id=trial_id, **point, dice_history=dice, best_dice=best, max_epochs=config.epochs,
            error=one_line(result.error) if result.error else None, is_default=config.with_default_trial and all(
                math.isclose(point[k], DEFAULT_POINT[k], rel_tol=1e-9) for k in SEARCH_SPACE),
            started=started, ended=ended,
        ))
    return rows


def close_trial_runs(experiment: Experiment, rows: list[TrialRow]) -> list[str]:
    """End the MLflow child runs still open, at their trial's end time: trials ASHA stopped
    (Tune kills the trial function, so it cannot end its run; ASHA's rung at the last epoch
    stops trials that already ran every epoch too) are FINISHED, failed trials FAILED."""
    endings = {r.trial_id: (bool(r.error), r.ended) for r in rows}
    return registry.tracking.close_trial_runs(
        experiment.experiment_id, experiment.parent_run_id, endings, uri=experiment.tracking_uri
    )


def build_report(rows: list[TrialRow], concurrent: int) -> TuneReport:
    """The best trial (a clear error when no trial reported a Dice), its comparison with the
    default configuration, and the concurrency planned and observed."""
    best = best_trial(rows)
    return TuneReport(
        rows=rows, best=best, comparison=compare_to_default(rows, best), max_concurrent_trials=concurrent,
        observed_concurrency=observed_concurrency([(r.started, r.ended) for r in rows if r.started is not None]),
    )


def write_report(report: TuneReport, config: SearchConfig, experiment: Experiment) -> str:
    """The trials table (Markdown), CSV and Dice map, each written atomically beside the
    experiment and recorded in ``report.files``; returns the table and summary as text."""
    rows, path = report.rows, experiment.path
    text = f"{format_trials_table(rows, report.best)}\n\n{format_summary(report)}\n"
    chart_title = f"{experiment.name}: validation Dice over alpha x gamma"
    report.files = {
        "table": write_atomic(path / TRIALS_MD, lambda tmp: tmp.write_text(text)),
        "csv": write_atomic(path / TRIALS_CSV, lambda tmp: write_trials_csv(rows, tmp)),
        "chart": write_atomic(path / DICE_MAP, lambda tmp: plot_dice_map(
            rows, tmp, title=chart_title, alpha_range=config.alpha_range, gamma_range=config.gamma_range)),
    }
    return text


def log_report(report: TuneReport, experiment: Experiment) -> None:
    """The report under the MLflow parent run: the best configuration as tags (not params: a
    resumed experiment may find a better trial), the scores as metrics, the files as artifacts."""
    b, c = report.best, report.comparison
    metrics = {f"best_{METRIC}": b.score} | {f"best_trial_val_dice_L{d}": b.best_dice[d] for d in DEPTHS}
    if c is not None:
        metrics |= {f"default_{METRIC}": c.default_dice, f"best_{METRIC}_same_budget": c.best_dice,
                    "gain_over_default": c.gain}
    metrics |= {"max_concurrent_trials": experiment.concurrent, "observed_concurrent_trials": report.observed_concurrency}
    registry.tracking.log_run_summary(
        experiment.parent_run_id, tags={f"best_{key}": getattr(b, key) for key in SEARCH_SPACE}, metrics=metrics,
        files=report.files.values(), uri=experiment.tracking_uri,
    )


def run_tuning(config: SearchConfig) -> TuneOutcome:
    """Run (or resume) the experiment; log and record its report; optionally register the best."""
    from anunet_platform.tune.callbacks import read_trial_times

    summary = check_dataset(config.data)
    experiment = open_experiment(config, summary.checksum)
    log_plan(config, experiment)
    train_config = trial_train_config(config, experiment)
    results = build_tuner(config, experiment, train_config).fit()

    rows = trial_rows(results, config, read_trial_times(experiment.path / TRIAL_TIMES))
    close_trial_runs(experiment, rows)
    report = build_report(rows, experiment.concurrent)
    text = write_report(report, config, experiment)
    log_report(report, experiment)
    registry.tracking.finish_run(experiment.parent_run_id, uri=experiment.tracking_uri)
    logger.info("tuning %s: trials (best validation Dice per depth; * best)\n%sfiles: %s; MLflow parent run %s",
                experiment.name, text, ", ".join(str(p) for p in report.files.values()), experiment.parent_run_id)

    best_config = {k: float(getattr(report.best, k)) for k in SEARCH_SPACE}
    outcome = TuneOutcome(experiment.name, best_config, report.best.score, len(results), experiment.parent_run_id,
                          report=report)
    if config.register:
        outcome.registered = run_training(
            replace(train_config, **best_config, run_name=f"{experiment.name}-best",
                    storage_path=experiment.path / "best", experiment=config.experiment, register=True, max_failures=2)
        )
    return outcome
