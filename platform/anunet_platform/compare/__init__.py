"""The paper's comparison on the user's data: ``jobs/compare.py``.

Stages:

    CompareConfig (architectures x seeds)
    -> one Ray Tune grid (``job.build_tuner``): a trial per (arch, seed) runs one TorchTrainer
       (``trial.compare_trial``; the same loss, augmentation and validation as ``jobs/train.py``),
       as many at once as the cluster fits (``tune.sizing.max_concurrent_trials``), each a child
       MLflow run under the comparison's parent run, and records its best epoch
    -> every trained network scored on the dataset's test split per volume (``evaluation``):
       Dice, IoU, precision, recall, HD95, ASSD at every output depth, one CSV per network
    -> Tables 2-5 (one row per method, mean ± std over seeds and cases), Table 6 and Fig. 13 for
       the nested networks (``tables``: pure), written beside the experiment and logged to the
       parent run; with ``register``, every network registered under its own names.

The same ``--name`` resumes: finished trainings are kept (``Tuner.restore``), an interrupted
one resumes from its checkpoint, and the evaluation and tables are made again.
"""

from anunet_platform.compare.config import PAPER_ORDER, CompareConfig, parse_archs
from anunet_platform.compare.evaluation import CaseScore, read_case_scores, score_case, score_test_split
from anunet_platform.compare.job import COMPARISON_CSV, COMPARISON_MD, FIG13, TABLE6_CSV, CompareOutcome, run_compare
from anunet_platform.compare.tables import MethodRow, Table6Row, depth_rows, format_markdown, method_rows

__all__ = [
    "COMPARISON_CSV",
    "COMPARISON_MD",
    "FIG13",
    "PAPER_ORDER",
    "TABLE6_CSV",
    "CaseScore",
    "CompareConfig",
    "CompareOutcome",
    "MethodRow",
    "Table6Row",
    "depth_rows",
    "format_markdown",
    "method_rows",
    "parse_archs",
    "read_case_scores",
    "run_compare",
    "score_case",
    "score_test_split",
]
