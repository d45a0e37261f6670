"""Tuning the hybrid loss's alpha and gamma (and the learning rate) with Ray Tune.

Stages:

    the search space (``SEARCH_SPACE``: every bound and scale, in one place)
    -> a search algorithm that itself holds the concurrency limit: seeded random search
       (default) or Optuna's TPE, the first trial being the default configuration
    -> one Tune trial per configuration: a function trainable that runs one TorchTrainer
       (``train.build_trainer``) and forwards its per-epoch metrics (``TuneReportCallback``)
    -> ASHA stops weak trials early on the deepest head's validation Dice
    -> the trials table, the Dice map over alpha x gamma and the best configuration against
       the default on the same budget (``tune_report``), printed and logged under the MLflow
       parent run; with ``register``, the best configuration retrained and registered

Concurrency: a trial's Tune actor holds no CPU (``TRIAL_RESOURCES``) and its TorchTrainer
asks for its workers only once it runs, so Ray alone would start every trial at once and each trainer
would wait forever for workers the others hold. ``max_concurrent_trials`` computes how many
trials fit (workers plus one CPU for each trial's input pipeline) and the search algorithm
enforces it: ``BasicVariantGenerator(max_concurrent=...)`` or a ``ConcurrencyLimiter``.
(``TuneConfig(max_concurrent_trials=...)`` is silently ignored for a ``SearchGenerator`` such
as ``BasicVariantGenerator``: that was the hang.)

The experiment resumes after the driver dies (same ``--name`` -> ``Tuner.restore``). In
MLflow every trial is a child run under one parent run of the experiment (``registry.tracking``).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from anunet_core.errors import one_line
from anunet_core.io import write_atomic
from anunet_core.vocabulary import DEPTHS
from anunet_platform import registry
from anunet_platform.cluster import init_ray
from anunet_platform.train import TrainConfig, TrainResult, build_trainer, check_dataset, default_storage_path, run_training
from anunet_platform.tune_report import (
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

logger = logging.getLogger(__name__)

METRIC = "val_dice"  # the deepest head's validation Dice
# What a trial's own actor holds: no CPU, only memory. It just drives its TorchTrainer, whose
# workers and Ray Data input pipeline ask for their CPUs themselves. Even a token CPU share
# would deadlock a cluster that is exactly full: 2 CPUs, 1 for the worker, 0.99 left, and every
# Ray Data task needs a whole CPU. (Tune refuses a request of no resources at all.)
TRIAL_RESOURCES = {"CPU": 0, "memory": 512 * 1024**2}
SEARCHERS = ("random", "tpe")
TRIALS_CSV, TRIALS_MD, DICE_MAP = "trials.csv", "trials.md", "dice_alpha_gamma.png"
TRIAL_TIMES = "trial_times.json"  # when each trial started and ended (tune_callbacks.TrialTimes)


# ----------------------------------------------------------------------------------------------
# The search space: the one place its bounds and scales are written
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched ``TrainConfig`` field: its default search range, its scale, and the
    interval any range for it must lie in (``open_limits``: the limits themselves excluded)."""

    name: str
    default_range: tuple[float, float]
    log: bool
    limits: tuple[float, float]
    open_limits: bool

    def check(self, low: float, high: float) -> None:
        lo, hi = self.limits
        inside = (lo < low and high < hi) if self.open_limits else (lo <= low and high <= hi)
        if not (low <= high and inside) or (self.log and low <= 0):
            interval = f"({lo:g}, {hi:g})" if self.open_limits else f"[{lo:g}, {hi:g}]"
            raise ValueError(f"{self.name} range must be LOW HIGH with LOW <= HIGH inside {interval}, got ({low:g}, {high:g})")

    def domain(self, low: float, high: float):
        """The Ray Tune sampling domain of ``[low, high]`` (a point when they are equal)."""
        from ray import tune

        if low == high:
            return low
        return tune.loguniform(low, high) if self.log else tune.uniform(low, high)


SEARCH_SPACE: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("alpha", (0.05, 0.95), log=False, limits=(0.0, 1.0), open_limits=True),  # class balance
        Dimension("gamma", (0.0, 5.0), log=False, limits=(0.0, 5.0), open_limits=False),  # focusing exponent
        Dimension("learning_rate", (3e-4, 3e-3), log=True, limits=(0.0, 1.0), open_limits=False),  # Adam, log-uniform
    )
}
# The untuned configuration every experiment is compared against: TrainConfig's defaults.
DEFAULT_POINT: dict[str, float] = {f.name: f.default for f in fields(TrainConfig) if f.name in SEARCH_SPACE}


@dataclass(frozen=True)
class SearchConfig:
    """A tuning experiment. ``jobs/tune.py`` flags map onto these fields.

    Attributes:
        data: dataset folder written by ``jobs/ingest.py``.
        num_samples: trials (configurations) to try; with 2 or more, the first is the default
            configuration (alpha 0.5, gamma 2, learning rate 1e-3), the baseline the best is
            compared against.
        epochs: maximum epochs per trial (ASHA's ``max_t``).
        search: ``random`` (seeded random search) or ``tpe`` (Optuna's Tree-structured Parzen
            Estimator: a model of which regions score well, from the trials so far).
        num_workers, cpus_per_worker, use_gpu, batch_size, cache_data: per trial, as in training.
        alpha_range, gamma_range: uniform search ranges of the loss parameters.
        learning_rate_range: log-uniform search range of Adam's learning rate.
        grace_period: ASHA: epochs every trial runs before it can be stopped.
        reduction_factor: ASHA: rungs at grace_period x reduction_factor^k epochs; at each
            rung a trial continues only if it is in the top 1/reduction_factor so far.
        max_concurrent_trials: trials at once; ``None`` computes it from the cluster.
        time_budget_s: end the experiment after this wall time (unfinished trials are
            reported as such); ``None``: no limit.
        name: the experiment name; the same name resumes it.
        storage_path: Tune/Train storage (shared storage on a cluster).
        experiment: MLflow experiment.
        seed: seeds the search and every trial's training (all trials share initial weights
            and data order, so they differ only by their configuration).
        register: retrain the best config and register one model per depth.
    """

    data: Path
    num_samples: int
    epochs: int
    search: str = "random"
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    batch_size: int = 8
    cache_data: bool = False
    alpha_range: tuple[float, float] = SEARCH_SPACE["alpha"].default_range
    gamma_range: tuple[float, float] = SEARCH_SPACE["gamma"].default_range
    learning_rate_range: tuple[float, float] = SEARCH_SPACE["learning_rate"].default_range
    grace_period: int = 1
    reduction_factor: int = 2
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    name: str | None = None
    storage_path: Path | None = None
    experiment: str = "anunet-tune"
    seed: int = 0
    register: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        for name in SEARCH_SPACE:  # flags give lists
            object.__setattr__(self, f"{name}_range", tuple(float(v) for v in getattr(self, f"{name}_range")))
        if self.num_samples < 1 or self.epochs < 1:
            raise ValueError(f"--num-samples and --epochs must be >= 1, got {self.num_samples}, {self.epochs}")
        if self.search not in SEARCHERS:
            raise ValueError(f"--search must be one of {', '.join(SEARCHERS)}, got {self.search!r}")
        for name, (low, high) in self.ranges().items():
            SEARCH_SPACE[name].check(low, high)
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ValueError(f"--grace-period must be >= 1 and --reduction-factor >= 2, got {self.grace_period}, {self.reduction_factor}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(f"--max-concurrent-trials must be >= 1, got {self.max_concurrent_trials}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"--time-budget-s must be > 0, got {self.time_budget_s}")

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: getattr(self, f"{name}_range") for name in SEARCH_SPACE}

    @property
    def with_default_trial(self) -> bool:
        """Whether the default configuration is one of the trials (a search of one sample is
        not a search: it stays a random sample)."""
        return self.num_samples >= 2


def search_domains(config: SearchConfig) -> dict[str, Any]:
    """``{"alpha": tune.uniform(..), "gamma": .., "learning_rate": tune.loguniform(..)}``."""
    return {name: SEARCH_SPACE[name].domain(low, high) for name, (low, high) in config.ranges().items()}


# ----------------------------------------------------------------------------------------------
# Planning: how many trials at once, and what ASHA will spend
# ----------------------------------------------------------------------------------------------


def max_concurrent_trials(cluster_cpus: float, cluster_gpus: float, config: SearchConfig) -> int:
    """How many trials fit at once so none waits forever for workers.

    A trial needs ``num_workers * cpus_per_worker`` CPUs (and ``num_workers`` GPUs with
    ``use_gpu``) for its workers plus one CPU for its Ray Data input pipeline; the trial
    function itself holds no CPU (``TRIAL_RESOURCES``). Raises ``ValueError`` when not even
    one trial fits.
    """
    cpus_per_trial = config.num_workers * config.cpus_per_worker + 1
    fits = math.floor(cluster_cpus / cpus_per_trial)
    if config.use_gpu:
        fits = min(fits, math.floor(cluster_gpus / config.num_workers))
    if fits < 1:
        need = f"{cpus_per_trial} CPUs" + (f" and {config.num_workers} GPUs" if config.use_gpu else "")
        raise ValueError(f"one trial needs {need}; the cluster has {cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs")
    return min(fits, config.num_samples)


def asha_rungs(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which ASHA may stop a trial: ``grace_period * reduction_factor**k`` below
    ``max_t`` (Ray's ``_Bracket`` with one bracket; a rung at ``max_t`` itself saves nothing:
    the trials it stops have run every epoch)."""
    count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1) if max_t >= grace_period else 0
    return [m for m in (grace_period * reduction_factor**k for k in range(count)) if m < max_t]


def asha_trial_epochs(num_samples: int, max_t: int, grace_period: int, reduction_factor: int) -> float:
    """Trial-epochs the experiment costs under ideal successive halving: at each rung the top
    ``1/reduction_factor`` continue. Asynchronous ASHA spends somewhat more (the first trials
    to reach a rung have nothing to be compared with and continue)."""
    total, alive = 0.0, 1.0
    for rung in asha_rungs(max_t, grace_period, reduction_factor):
        survivors = alive / reduction_factor
        total += (alive - survivors) * rung
        alive = survivors
    return num_samples * (total + alive * max_t)


def tpe_startup_trials(num_samples: int) -> int:
    """Random trials before TPE models the space: a quarter of the budget, 3 to 10 (Optuna's
    default, 10, would leave a 16-trial search nearly random)."""
    return max(3, min(10, num_samples // 4))


def require_state_api() -> None:
    """Refuse to tune on a cluster without Ray's state API (the dashboard).

    A trial ASHA stops is killed together with its TorchTrainer's controller, before that
    controller can free its workers' placement group; Ray Train's ``PlacementGroupCleaner``
    frees it once it sees the controller dead, and it asks the state API. Without the
    dashboard every stopped trial keeps its CPUs (and GPUs) forever and the next trials wait
    for them: a hang, so a clear error instead."""
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    try:
        list_nodes(limit=1, timeout=10, raise_on_missing_output=False)
    except (RayStateApiException, ConnectionError, OSError) as exc:
        raise ValueError(
            "tuning needs Ray's state API (the dashboard): without it the workers of trials ASHA stops are never "
            "freed and the experiment hangs; start Ray with its dashboard (the default; not include_dashboard=False "
            f"or --include-dashboard=false). ({type(exc).__name__})"
        ) from None


def experiment_name(config: SearchConfig, dataset_checksum: str) -> str:
    search = "" if config.search == "random" else f"-{config.search}"
    return config.name or f"tune-{dataset_checksum[:8]}{search}-n{config.num_samples}-e{config.epochs}-s{config.seed}"


def search_algorithm(config: SearchConfig, concurrent: int):
    """The search algorithm, holding the concurrency limit itself (see the module doc)."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    points = [dict(DEFAULT_POINT)] if config.with_default_trial else []
    if config.search == "random":
        return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrent, random_state=config.seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    with warnings.catch_warnings():  # multivariate and constant_liar are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=config.seed, n_startup_trials=tpe_startup_trials(config.num_samples),
            multivariate=True,  # alpha and gamma interact: model them jointly
            constant_liar=True,  # running trials count as pending: concurrent trials spread out
        )
    return ConcurrencyLimiter(
        OptunaSearch(metric=METRIC, mode="max", points_to_evaluate=points, sampler=sampler), max_concurrent=concurrent
    )


# ----------------------------------------------------------------------------------------------
# A trial
# ----------------------------------------------------------------------------------------------


def tune_trial(params: dict[str, Any]) -> None:
    """The Tune function trainable: one TorchTrainer run whose epochs Tune sees as iterations.
    Its MLflow child run opens when the trial starts; it ends it when training returns."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from anunet_platform.logs import configure_job_logging

    configure_job_logging(worker=True)  # a Tune trial's process: its INFO lines reach the driver through stdout
    base = TrainConfig(**params["train_config"])
    trial_id = tune.get_context().get_trial_id()
    run_name = f"{params['name']}-{trial_id}"
    child = registry.tracking.start_trial_run(
        params["mlflow_experiment_id"], params["mlflow_parent_run_id"], trial_id, run_name,
        {key: params[key] for key in SEARCH_SPACE}, uri=base.tracking_uri,
    )
    config = replace(base, **{key: params[key] for key in SEARCH_SPACE}, run_name=run_name, mlflow_run_id=child)
    # fit() raises on a training error; a trial Tune stops (ASHA) is killed inside it. Either way
    # the driver ends this run afterwards, from Tune's own verdict (close_trial_runs).
    build_trainer(config, callbacks=[TuneReportCallback()]).fit()
    registry.tracking.finish_run(child, uri=base.tracking_uri)


# ----------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------


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
    else new, with ASHA and the search algorithm holding the concurrency limit."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from anunet_platform.tune_callbacks import TrialTimes

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
        return tune.Tuner.restore(str(path), trainable=trainable, param_space=param_space, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=config.num_samples,
            max_concurrent_trials=None,  # held by the search algorithm itself (see the module doc)
            # stop_last_trials=False: reaching max_t alone does not kill a trial right after its
            # last report (a rung that falls on max_t still can: close_trial_runs covers it)
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=config.epochs,
                                    grace_period=config.grace_period, reduction_factor=config.reduction_factor,
                                    stop_last_trials=False),
            search_alg=search_algorithm(config, experiment.concurrent),
            time_budget_s=config.time_budget_s,
        ),
        run_config=tune.RunConfig(name=experiment.name, storage_path=str(experiment.storage),
                                  callbacks=[TrialTimes(path / TRIAL_TIMES)]),
    )


def trial_rows(results, config: SearchConfig, intervals: dict[str, tuple[float, float]]) -> list[TrialRow]:
    """One ``TrialRow`` per Tune result: its configuration, the per-epoch Dice history and the
    best Dice per depth from its metrics, and when it ran (``intervals``: ``{trial_id: (start,
    end)}`` from ``TrialTimes``) where known."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        trial_id = str((result.metrics or {}).get("trial_id") or Path(result.path).name)
        if history is None or METRIC not in getattr(history, "columns", ()):
            dice, best = (), {d: math.nan for d in DEPTHS}
        else:
            history = history.sort_values("training_iteration")
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
    from anunet_platform.tune_callbacks import read_trial_times

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


__all__ = [
    "DEFAULT_POINT", "SEARCHERS", "SEARCH_SPACE", "Dimension", "SearchConfig", "TuneOutcome", "asha_rungs",
    "asha_trial_epochs", "max_concurrent_trials", "run_tuning", "search_algorithm", "search_domains", "tpe_startup_trials",
]
