"""Ray callbacks of the tuning experiment (imported only where Ray runs): every epoch's metrics
from a trial's TorchTrainer to Tune; on the driver, when each trial ran and the results a
restored experiment's trials had reported before the driver died."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.fs
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from anunet_core.io import write_json_atomic
from anunet_platform.tune.space import EPOCHS_DONE


class EpochReport(TuneReportCallback):
    """Ray Train's ``TuneReportCallback`` (each report of a trial's TorchTrainer becomes a Tune
    result) adding ``EPOCHS_DONE`` (``epoch + 1``). Tune counts ``training_iteration`` from 1
    again when it reruns a trial, while the trial's TorchTrainer resumes from its latest
    checkpoint: ASHA's rungs and the trials table count the epochs themselves."""

    def after_report(self, run_context, metrics, checkpoint) -> None:
        metrics = [m | {EPOCHS_DONE: int(m["epoch"]) + 1} if "epoch" in m else m for m in metrics]
        super().after_report(run_context, metrics, checkpoint)


class KeepTrialResults(tune.Callback):
    """Keeps the results a trial reported before the driver died when a restored experiment
    runs it again.

    Tune's loggers write a trial's results (``progress.csv``, ``result.json``) in the driver's
    staging folder and copy them to the experiment's storage. A restored driver copies them back
    only for a trial with a Tune checkpoint, and ours have none (a trial's state is its
    TorchTrainer's checkpoints): the trial would start fresh files, then overwrite the stored
    ones, and the epochs it had reported would be lost. So before the loggers open a trial's
    files (this callback comes before them), the stored files are copied into the staging folder
    where it has none; the loggers then append. A trial Tune retries under the same driver keeps
    its own files."""

    FILES = ("progress.csv", "result.json")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        trial.init_local_path()
        for name in self.FILES:
            local = Path(trial.local_path, name)
            stored = Path(trial.storage.trial_fs_path, name).as_posix()
            if local.exists() or stored == local.as_posix():
                continue
            try:
                pyarrow.fs.copy_files(stored, local.as_posix(), source_filesystem=trial.storage.storage_filesystem)
            except FileNotFoundError:  # a trial that never reported
                pass


class TrialTimes(tune.Callback):
    """Records when each trial starts and ends, as Tune's controller sees it, in a JSON file
    ``{trial_id: [start, end or null]}`` (seconds since the epoch). The file outlives the driver:
    a restored experiment keeps the earlier trials' times (the callback is pickled with the
    experiment and writes to the same path). The path must not be a ``.json`` file at the top of
    the experiment folder: Tune copies those into a restored driver's staging folder and later
    back over the stored ones, which would undo every time recorded after the restore."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _times(self) -> dict[str, list[float | None]]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _record(self, trial_id: str, index: int) -> None:
        times = self._times()
        entry = times.get(trial_id, [None, None])
        if index == 0:
            entry = [time.time(), None]  # a (re)started trial runs from now
        else:
            entry[1] = time.time()
        times[trial_id] = entry
        write_json_atomic(self.path, times)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._record(trial.trial_id, 0)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial.trial_id, 1)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial.trial_id, 1)


def read_trial_times(path: Path) -> dict[str, tuple[float, float]]:
    """``{trial_id: (start, end)}`` of the trials that ended, from ``TrialTimes``' file."""
    try:
        times = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    return {k: (v[0], v[1]) for k, v in times.items() if v[0] is not None and v[1] is not None}
