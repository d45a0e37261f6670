"""The flags of every job, in one place, checked against the typed configs they fill.

Each ``jobs/<name>.py`` is ``run_job(<name>_parser(), <platform function>)``: flags in, one
call out. A flag's ``dest`` is the name of a field of its job's config (:data:`JOB_TARGETS`),
and its default is read from that field (:func:`_default`), so each default is written once;
``tests/jobs/test_jobs_cli.py`` checks both for every job. The parsers are also what the
Kubernetes manifest tests parse entrypoints with, so a renamed flag breaks those tests rather
than a nightly run.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from anunet_core.archives import LAYOUTS
from anunet_core.errors import one_line
from anunet_core.synthetic import make_archive
from anunet_core.vocabulary import ARCHS, DEPTHS, MODALITIES, ORGANS, validate_modality
from anunet_platform import registry
from anunet_platform.compare import CompareConfig
from anunet_platform.contracts import FailedFractionExceeded
from anunet_platform.demo import DemoConfig
from anunet_platform.evaluate import run_evaluate
from anunet_platform.ingest import IngestConfig
from anunet_platform.logs import configure_job_logging
from anunet_platform.segment import SegmentConfig
from anunet_platform.segment.config import OUTPUT_FORMATS, parse_output_formats
from anunet_platform.selection import POSTPROCESS_MODES
from anunet_platform.train import TrainConfig
from anunet_platform.tune import SEARCH_SPACE, SEARCHERS, SearchConfig


def _default(target: Callable, name: str) -> Any:
    """The default of field ``name`` of a typed config (a dataclass), or of parameter ``name``
    of a job function: each default is written once, where the job's code reads it."""
    if dataclasses.is_dataclass(target):
        field = {f.name: f for f in dataclasses.fields(target)}[name]
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        raise KeyError(f"{target.__name__}.{name} has no default")
    default = inspect.signature(target).parameters[name].default
    if default is inspect.Parameter.empty:
        raise KeyError(f"{target.__name__}({name}) has no default")
    return default


def _modality(value: str) -> str:
    try:
        return validate_modality(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {' or '.join(MODALITIES)}, got {value!r}") from None


def _label_values(value: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected label values like '5' or '2,3', got {value!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"label values must be positive integers, got {value!r}")
    return values


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return number


def _add_layout_flag(parser: argparse.ArgumentParser, target: Callable) -> None:
    layout = _default(target, "layout")
    parser.add_argument("--layout", choices=("auto", *LAYOUTS), default=layout, help=f"archive layout (default {layout})")


def _add_pseudonym_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pseudonymize", action="store_true",
        help="replace case ids and source paths in every output and log by HMAC-SHA256 pseudonyms keyed by "
             "$ANUNET_PSEUDONYM_KEY (a Secret on Kubernetes)",
    )
    parser.add_argument("--id-map", type=Path, default=None,
                        help="with --pseudonymize: the one file the map from pseudonyms back to paths is written to")


def _add_failure_flags(parser: argparse.ArgumentParser, target: Callable, what: str) -> None:
    """``--max-failed-fraction`` and ``--max-voxels``: how much bad input a job tolerates."""
    fraction = _default(target, "max_failed_fraction")
    parser.add_argument(
        "--max-failed-fraction", type=_fraction, default=fraction,
        help=f"exit 1 (after writing every output) when more than this share of the {what} failed (default {fraction})",
    )
    voxels = _default(target, "max_voxels")
    parser.add_argument(
        "--max-voxels", type=_positive_int, default=voxels,
        help=f"largest scan read, in voxels, checked on its header before loading (default {voxels}: 512x512x2048)",
    )


def _storage_path(value: str) -> Path:
    if "://" in value:
        raise argparse.ArgumentTypeError(
            f"cloud storage URIs are not supported yet, got {value!r}: mount shared storage (NFS, a "
            "ReadWriteMany volume) on every node and pass its path"
        )
    return Path(value)


def make_synthetic_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/make_synthetic.py",
        description="Write a seeded synthetic abdomen archive (liver, spleen, kidneys) as NIfTI or DICOM.",
    )
    parser.add_argument("--out", type=Path, required=True, help="archive folder to write")
    parser.add_argument("--cases", type=_positive_int, required=True, help="number of cases (patients)")
    parser.add_argument("--modality", type=_modality, required=True, help="CT or MR")
    parser.add_argument("--format", choices=("nifti", "dicom"), required=True, help="image file format")
    parser.add_argument(
        "--layout",
        choices=("auto", *LAYOUTS),
        default="auto",
        help="archive layout (default auto: pairs for nifti, dicom for dicom)",
    )
    seed = _default(make_archive, "seed")
    parser.add_argument("--seed", type=int, default=seed, help=f"seed: same seed, same archive (default {seed})")
    return parser


def ingest_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/ingest.py",
        description="Ingest a scan archive into a Parquet dataset of preprocessed slices (Ray Data), split by patient.",
    )
    parser.add_argument("--source", type=Path, required=True, help="archive folder")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    parser.add_argument("--organ", choices=ORGANS, required=True, help="organ to segment")
    parser.add_argument("--modality", type=_modality, required=True, help="CT or MR")
    _add_layout_flag(parser, IngestConfig)
    parser.add_argument(
        "--label-values",
        type=_label_values,
        default=_default(IngestConfig, "label_values"),
        help="label values forming the organ, e.g. 5 (TotalSegmentator liver); default: the layout's",
    )
    size, seed = _default(IngestConfig, "size"), _default(IngestConfig, "seed")
    parser.add_argument("--size", type=_positive_int, default=size, help=f"slice side (default {size})")
    parser.add_argument("--seed", type=int, default=seed, help=f"seed of the patient split (default {seed})")
    val = _default(IngestConfig, "val_fraction")
    parser.add_argument(
        "--val-fraction", type=_fraction, default=val, help=f"share of training patients for validation (default {val})"
    )
    empty = _default(IngestConfig, "empty_slice_fraction")
    parser.add_argument(
        "--empty-slice-fraction",
        type=_fraction,
        default=empty,
        help=f"share of organ-free slices kept per training and validation case (default {empty}; all organ slices are kept, and every slice of a test case)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    _add_failure_flags(parser, IngestConfig, "cases")
    _add_pseudonym_flags(parser)
    return parser


def _add_training_flags(parser: argparse.ArgumentParser, config: type, *, workers_required: bool) -> None:
    """The flags training and tuning share: data, scale, batch, storage, MLflow, seed; their
    defaults come from ``config`` (TrainConfig or SearchConfig)."""
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by jobs/ingest.py")
    workers = None if workers_required else _default(config, "num_workers")
    parser.add_argument(
        "--num-workers", type=_positive_int, required=workers_required, default=workers,
        help="Ray Train workers (DDP ranks)" + ("" if workers_required else f" per trial (default {workers})"),
    )
    cpus, batch, seed = (_default(config, name) for name in ("cpus_per_worker", "batch_size", "seed"))
    parser.add_argument("--cpus-per-worker", type=_positive_int, default=cpus, help=f"CPUs per worker (default {cpus})")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker: NCCL and bf16 autocast")
    parser.add_argument("--batch-size", type=_positive_int, default=batch, help=f"slices per worker per step (default {batch})")
    parser.add_argument("--seed", type=int, default=seed, help=f"seed (default {seed})")
    parser.add_argument(
        "--storage-path", type=_storage_path, default=_default(config, "storage_path"),
        help="checkpoint storage (default ./anunet-workspace/ray_results; shared storage on a cluster)",
    )
    experiment = _default(config, "experiment")
    parser.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")
    parser.add_argument(
        "--cache-data", action="store_true",
        help="decode the splits once into Ray's object store instead of streaming them from Parquet every epoch: "
        "faster where the dataset fits in memory (each concurrent trial holds its own copy)",
    )


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/train.py",
        description="Train ANU-Net (or a baseline, --arch) on an ingested dataset with Ray Train (DDP); optionally register every depth in MLflow.",
    )
    _add_training_flags(parser, TrainConfig, workers_required=True)
    parser.add_argument("--epochs", type=_positive_int, required=True, help="passes over the training split")
    arch = _default(TrainConfig, "arch")
    parser.add_argument(
        "--arch", type=str.lower, choices=ARCHS, default=arch,
        help=f"network (default {arch}): ANU-Net or one of the paper's baselines, trained and registered the same "
        "way; unetpp registers per depth like anunet, the others once as <arch>-<organ>-<modality>",
    )
    alpha, gamma, lr = (_default(TrainConfig, name) for name in ("alpha", "gamma", "learning_rate"))
    parser.add_argument("--alpha", type=_fraction, default=alpha, help=f"hybrid loss: weight of organ pixels (default {alpha})")
    parser.add_argument("--gamma", type=float, default=gamma, help=f"hybrid loss: focusing exponent (default {gamma})")
    parser.add_argument("--learning-rate", type=float, default=lr, help=f"Adam peak learning rate (default {lr:g})")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="train without augmentation")
    parser.add_argument(
        "--run-name", default=_default(TrainConfig, "run_name"),
        help="run name; the same name resumes (default: derived from data and settings)",
    )
    failures = _default(TrainConfig, "max_failures")
    parser.add_argument(
        "--max-failures", type=int, default=failures,
        help=f"restarts from the latest checkpoint after a worker failure (default {failures})",
    )
    parser.add_argument("--register", action="store_true", help="register one model per depth in MLflow (alias candidate; a network with one output: one model)")
    drop = _default(TrainConfig, "adaptive_max_dice_drop")
    parser.add_argument(
        "--adaptive-max-dice-drop", type=_fraction, default=drop,
        help="with --register: calibrate the per-slice exit rule of segment --depth adaptive on the validation cases "
        f"so that their expected volume Dice stays within this of the deepest head's (default {drop:g})",
    )
    return parser


def tune_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/tune.py",
        description="Tune the hybrid loss's alpha and gamma (and the learning rate) with Ray Tune + ASHA; each trial a TorchTrainer run.",
    )
    _add_training_flags(parser, SearchConfig, workers_required=False)
    parser.add_argument("--num-samples", type=_positive_int, required=True, help="trials (configurations) to try")
    parser.add_argument("--epochs", type=_positive_int, required=True, help="maximum epochs per trial")
    parser.add_argument(
        "--search", choices=SEARCHERS, default=_default(SearchConfig, "search"),
        help="random (seeded random search, the default) or tpe (Optuna's TPE: models which regions score well; "
        "better from about 16 trials on, see the README)",
    )
    for name, dimension in SEARCH_SPACE.items():
        low, high = _default(SearchConfig, f"{name}_range")
        parser.add_argument(
            f"--{name.replace('_', '-')}-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=(low, high),
            help=f"{'log-uniform' if dimension.log else 'uniform'} search range (default {low:g} {high:g})",
        )
    parser.add_argument(
        "--grace-period", type=_positive_int, default=_default(SearchConfig, "grace_period"),
        help=f"ASHA: epochs every trial runs before it can be stopped (default {_default(SearchConfig, 'grace_period')})",
    )
    parser.add_argument(
        "--reduction-factor", type=_positive_int, default=_default(SearchConfig, "reduction_factor"),
        help="ASHA: rungs at grace-period x factor^k epochs, the top 1/factor continue at each "
        f"(default {_default(SearchConfig, 'reduction_factor')})",
    )
    parser.add_argument(
        "--max-concurrent-trials", type=_positive_int, default=_default(SearchConfig, "max_concurrent_trials"),
        help="default: as many as the cluster fits",
    )
    parser.add_argument(
        "--time-budget-s", type=_positive_float, default=_default(SearchConfig, "time_budget_s"),
        help="end the experiment after this wall time (default: none)",
    )
    failures = _default(SearchConfig, "max_failures")
    parser.add_argument(
        "--max-failures", type=int, default=failures,
        help=f"times a failed trial starts again, resuming its training from its latest checkpoint (default {failures})",
    )
    parser.add_argument("--name", default=_default(SearchConfig, "name"), help="experiment name; the same name resumes it")
    parser.add_argument("--register", action="store_true", help="retrain the best config and register every depth")
    return parser


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/compare.py",
        description="The paper's comparison (Tables 2-6, Fig. 13) on your dataset: ANU-Net and its five baselines "
        "trained as one Ray Tune grid with the same loss and epochs, evaluated per volume on the test split.",
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by jobs/ingest.py (with a test split)")
    parser.add_argument(
        "--archs", default="all",
        help=f"'all' (the default: {', '.join(ARCHS)}) or a comma-separated list of them",
    )
    parser.add_argument("--epochs", type=_positive_int, required=True, help="passes over the training split, every network")
    parser.add_argument("--seeds", type=_positive_int, default=_default(CompareConfig, "seeds"),
                        help="trainings per architecture, seeds 0..N-1 (default 1); tables give mean ± std over seeds and cases")
    parser.add_argument("--register", action="store_true",
                        help="register every trained network under its own names (alias candidate)")
    parser.add_argument("--name", default=None, help="experiment name; the same name resumes (default: from data and settings)")
    workers, cpus, batch = (_default(CompareConfig, n) for n in ("num_workers", "cpus_per_worker", "batch_size"))
    parser.add_argument("--num-workers", type=_positive_int, default=workers, help=f"Ray Train workers per training (default {workers})")
    parser.add_argument("--cpus-per-worker", type=_positive_int, default=cpus, help=f"CPUs per worker (default {cpus})")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker: NCCL and bf16 autocast")
    parser.add_argument("--batch-size", type=_positive_int, default=batch, help=f"slices per worker per step (default {batch})")
    parser.add_argument("--cache-data", action="store_true",
                        help="decode the splits once into Ray's object store (each concurrent training holds a copy)")
    parser.add_argument("--max-concurrent-trials", type=_positive_int, default=None,
                        help="trainings at once (default: as many as the cluster fits)")
    timed = _default(CompareConfig, "timed_slices")
    parser.add_argument("--timed-slices", type=_positive_int, default=timed,
                        help=f"slices timed per depth for Table 6, scaled to the paper's 2,000 (default {timed})")
    parser.add_argument("--storage-path", type=_storage_path, default=None,
                        help="Tune and checkpoint storage (default ./anunet-workspace/ray_results; shared storage on a cluster)")
    experiment = _default(CompareConfig, "experiment")
    parser.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for comparison.md/.csv, table6.csv, fig13.png and the per-case files "
                        "(default: the experiment's folder under the storage path)")
    return parser


def _depth_flag(value: str) -> str:
    text = value.strip().lower()
    if text in ("auto", "adaptive") or (text.isdigit() and int(text) in DEPTHS):
        return text
    raise argparse.ArgumentTypeError(f"must be auto, adaptive or one of {DEPTHS[0]}..{DEPTHS[-1]}, got {value!r}")


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0.0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _output_formats(value: str) -> tuple[str, ...]:
    try:
        return parse_output_formats(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--output-format ")) from None


def segment_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/segment.py",
        description=(
            "Segment every scan of an archive (NIfTI files, DICOM series; labels not needed) with the registered "
            "ANU-Net at an automatically chosen pruning depth, on a Ray Data actor pool. Writes OUT/masks/<case_id>.nii.gz "
            "in each scan's own geometry, OUT/previews/<case_id>.png and OUT/manifest.parquet; a rerun skips the cases "
            "already done with the same model version."
        ),
    )
    parser.add_argument("--archive", type=Path, required=True, help="archive folder (any layout ingest reads)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (masks/, previews/, manifest.parquet)")
    parser.add_argument(
        "--model", required=True, action="append",
        help="registered model family, e.g. anunet-liver-ct (the models anunet-liver-ct-L1..L4); repeat it for "
             "several organs of one modality (--model anunet-liver-ct --model anunet-spleen-ct): each scan is read "
             "once, and masks/<case_id>.nii.gz becomes a label map (labels.json)",
    )
    depth = _default(SegmentConfig, "depth")
    parser.add_argument(
        "--depth", type=_depth_flag, default=depth, help=f"auto (one depth chosen from the validation cases), adaptive (each slice stops at the first depth whose "
        f"heads agree, by the exit rule calibrated at registration) or a fixed depth {DEPTHS[0]}..{DEPTHS[-1]} "
        f"(default {depth})"
    )
    drop = _default(SegmentConfig, "max_dice_drop")
    parser.add_argument(
        "--max-dice-drop", type=_fraction, default=drop,
        help=f"auto: the smallest depth whose volume Dice is within this of the best depth's with 95%% confidence over "
        f"the validation cases (default {drop})",
    )
    parser.add_argument(
        "--latency-budget-ms", type=_positive_float, default=_default(SegmentConfig, "latency_budget_ms"),
        help="auto: instead, the best validation Dice among depths within this CPU latency (ms per slice)",
    )
    alias = _default(SegmentConfig, "alias")
    parser.add_argument("--alias", default=alias, help=f"registry alias to use (default {alias}; else the newest versions)")
    _add_layout_flag(parser, SegmentConfig)
    batch = _default(SegmentConfig, "batch_size")
    parser.add_argument("--batch-size", type=_positive_int, default=batch, help=f"slices per model forward (default {batch})")
    parser.add_argument("--use-gpu", action="store_true", help="GPU actors (one GPU each, bf16 autocast); default CPU actors")
    parser.add_argument(
        "--num-actors", type=_positive_int, default=_default(SegmentConfig, "num_actors"),
        help="model actors (default: one per GPU with --use-gpu, else one per CPU)",
    )
    parser.add_argument(
        "--cpus-per-actor", type=_positive_int, default=_default(SegmentConfig, "cpus_per_actor"),
        help="CPUs (and torch threads) per CPU actor (default: single-threaded actors, one per CPU left after reading)",
    )
    parser.add_argument("--no-previews", dest="previews", action="store_false", help="skip the preview PNGs")
    formats = _default(SegmentConfig, "output_format")
    parser.add_argument(
        "--output-format", type=_output_formats, default=formats,
        help=f"{' or '.join(OUTPUT_FORMATS)}, comma-separated (default {formats}); dicom-seg: a DICOM Segmentation "
             "object per case read from a DICOM series, in OUT/dicom-seg/",
    )
    postprocess = _default(SegmentConfig, "postprocess")
    parser.add_argument(
        "--postprocess", choices=POSTPROCESS_MODES, default=postprocess,
        help=f"keep each organ's largest 3-D component(s) (kidney: two): auto follows each model's registered "
             f"decision (on where it raised its validation Dice), on or off (default {postprocess})",
    )
    parser.add_argument("--recompute", action="store_true", help="redo cases already done with the same model version")
    _add_failure_flags(parser, SegmentConfig, "cases")
    _add_pseudonym_flags(parser)
    parser.add_argument(
        "--allow-unpromoted", action="store_true",
        help="run the newest versions of a model family with no --alias versions (refused otherwise)",
    )
    return parser


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/demo.py",
        description=(
            "The whole chain on synthetic data: archive -> ingest -> train -> register -> promote -> nightly "
            "segmentation of new scans -> evaluation. Locally, or on a cluster with ray job submit."
        ),
    )
    workdir = _default(DemoConfig, "workdir")
    parser.add_argument("--workdir", type=Path, default=workdir, help=f"where everything is written (default ./{workdir})")
    cases, epochs, size = (_default(DemoConfig, name) for name in ("cases", "epochs", "size"))
    parser.add_argument("--cases", type=_positive_int, default=cases, help=f"training cases (default {cases})")
    parser.add_argument("--epochs", type=_positive_int, default=epochs, help=f"training epochs (default {epochs})")
    parser.add_argument("--size", type=_positive_int, default=size, help=f"slice side (default {size}; the paper's 256 is slower)")
    return parser


def promote_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/promote.py",
        description="Move an MLflow alias (default production) to the four depth versions one training run registered.",
    )
    parser.add_argument("--run-id", required=True, help="MLflow run id of the training run (jobs/train.py --register)")
    alias = _default(registry.run_promote, "alias")
    parser.add_argument("--alias", default=alias, help=f"alias to move (default {alias})")
    return parser


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/evaluate.py",
        description=(
            "Score segmentation masks (OUT/masks/<case_id>.nii.gz) against a labelled archive: per-case Dice, IoU, "
            "precision, recall and HD95, printed as in the paper's Tables 2-5 and written as Parquet and CSV."
        ),
    )
    parser.add_argument("--pred", type=Path, required=True, help="the segment job's --out folder (holding masks/)")
    parser.add_argument("--labels", type=Path, required=True, help="labelled archive (any layout ingest reads)")
    parser.add_argument("--organ", choices=ORGANS, required=True, help="organ the masks segment")
    parser.add_argument(
        "--modality", type=_modality, default=_default(run_evaluate, "modality"),
        help="CT or MR (optional: checked against DICOM tags and layouts)",
    )
    _add_layout_flag(parser, run_evaluate)
    parser.add_argument(
        "--label-values",
        type=_label_values,
        default=_default(run_evaluate, "label_values"),
        help="label values forming the organ, e.g. 5 (TotalSegmentator liver); default: the layout's",
    )
    parser.add_argument(
        "--out", type=Path, default=_default(run_evaluate, "out"),
        help="where evaluation.parquet and evaluation.csv go (default: --pred)",
    )
    parser.add_argument(
        "--pseudonymize", action="store_true",
        help="the masks come from segment --pseudonymize: match them by the same pseudonyms ($ANUNET_PSEUDONYM_KEY)",
    )
    return parser


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "make_synthetic": make_synthetic_parser,
    "ingest": ingest_parser,
    "train": train_parser,
    "tune": tune_parser,
    "segment": segment_parser,
    "demo": demo_parser,
    "promote": promote_parser,
    "evaluate": evaluate_parser,
    "compare": compare_parser,
}


#: What each job's flags fill: the config dataclass (or function) whose fields are the flags'
#: ``dest`` names and hold their defaults. make_synthetic's ``--format`` is ``make_archive``'s
#: ``fmt`` (the job maps it; see jobs/make_synthetic.py).
JOB_TARGETS: dict[str, Callable] = {
    "make_synthetic": make_archive,
    "ingest": IngestConfig,
    "train": TrainConfig,
    "tune": SearchConfig,
    "segment": SegmentConfig,
    "demo": DemoConfig,
    "promote": registry.run_promote,
    "evaluate": run_evaluate,
    "compare": CompareConfig,
}


def run_job(parser: argparse.ArgumentParser, action: Callable[[argparse.Namespace], Any], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``action(args)``; a bad input ends the job with one line and exit 2.

    Progress goes to stdout through the job's logging (:func:`~anunet_platform.logs.configure_job_logging`).
    A job that ran but failed more cases than ``--max-failed-fraction`` allows exits 1 with
    one line (its outputs are written). Errors of bad input (``ValueError`` and its subclasses: unreadable archives, refused
    outputs, bad flags, ``FileNotFoundError``) are printed as ``error: <one line>``; anything
    else is a bug and keeps its traceback.
    """
    args = parser.parse_args(argv)
    configure_job_logging()
    try:
        action(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"{parser.prog}: error: {one_line(exc, limit=100_000)}", file=sys.stderr)
        return 2
    except FailedFractionExceeded as exc:
        print(f"{parser.prog}: {one_line(str(exc), limit=100_000)}", file=sys.stderr)  # the verdict, not a bug: no type
        return 1
    return 0
