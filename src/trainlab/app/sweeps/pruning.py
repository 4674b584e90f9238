"""OptunaPruning: report the objective to an Optuna trial each epoch; stop when it is pruned."""

from __future__ import annotations

import logging
import os
from typing import Any

from trainlab.engine.callback import Callback
from trainlab.errors import ConfigError

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    """Report `monitor` after each validation as the trial's value at step `epoch`.

    When the study's pruner says the trial is worse than its peers, the run stops at the
    end of this epoch (it still tests and writes metrics.json) and the trial is marked
    with the epoch, so the sweeper records it as PRUNED. Added by `cli.build` when the
    config has the `optuna_trial` block the Optuna sweeper passes to each job. `run_dir`:
    the job's folder, under which the outcome is also kept in this process
    (`optuna_study.PRUNED_HERE`).
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        number: int,
        monitor: str,
        pruner: dict[str, Any] | None = None,
        run_dir: str | None = None,
    ) -> None:
        from trainlab.app.sweeps.optuna_study import PRUNED_HERE, open_trial

        self.trial = open_trial(storage, study_name, number, pruner)
        self.monitor = monitor
        self.run_dir = os.path.abspath(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            PRUNED_HERE[self.run_dir] = None
        # Epochs before which the pruner never prunes; asking it then would only read
        # every trial of the study from storage (the median and percentile pruners'
        # n_warmup_steps, compared with the step as they compare it; none: never).
        target = str((pruner or {}).get("_target_", "optuna.pruners.NopPruner"))
        self.never = target.endswith(".NopPruner")
        warms_up = target.endswith((".MedianPruner", ".PercentilePruner"))
        self.warmup = int((pruner or {}).get("n_warmup_steps", 0)) if warms_up else 0

    def on_validation_end(self, trainer, state) -> None:
        from trainlab.app.sweeps.optuna_study import PRUNED_AT, PRUNED_HERE

        if self.monitor not in state.metrics:
            raise ConfigError(
                f"objective={self.monitor} is not known after each validation, so the Optuna "
                f"pruner cannot follow it; use a val/ metric as the objective"
            )
        value = state.metrics[self.monitor]
        self.trial.report(value, step=state.epoch)
        if self.never or state.epoch < self.warmup:
            return
        if self.trial.should_prune():
            self.trial.set_user_attr(PRUNED_AT, state.epoch)
            if self.run_dir is not None:
                PRUNED_HERE[self.run_dir] = state.epoch
            state.should_stop = True
            log.info(
                f"Optuna trial {self.trial.number} pruned after epoch {state.epoch + 1} "
                f"({self.monitor} {value:.4f}): the pruner judged it behind the other trials"
            )
