"""Driver-side Ray Tune callbacks of the tuning experiment (imported only where Ray runs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ray import tune

from anunet_core.io import write_json_atomic


class TrialTimes(tune.Callback):
    """Records when each trial starts and ends, as Tune's controller sees it, in a JSON file
    ``{trial_id: [start, end or null]}`` (seconds since the epoch) beside the experiment. The
    file outlives the driver: a restored experiment keeps the earlier trials' times (the
    callback is pickled with the experiment and writes to the same path)."""

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
