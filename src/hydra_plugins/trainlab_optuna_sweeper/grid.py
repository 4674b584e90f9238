"""`hydra/sweeper=trainlab_grid`, trainlab's default sweeper: Hydra's grid sweeper
(`trainlab -m a=1,2 b=3,4`), resumable.

Running the same grid command again continues the latest unfinished sweep of that command
in its folder (`RunFolder` picks it; see `trainlab.app.sweeps.grid`) and launches only the
jobs without a result, printing which it skips; `resume=none` starts a new sweep. A job
cut short with a checkpoint continues from it (`resume=auto` in its folder).
"""

# No `from __future__ import annotations` here: see config.py.
from dataclasses import dataclass
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class TrainlabGridSweeperConf:
    _target_: str = "hydra_plugins.trainlab_optuna_sweeper.grid.TrainlabGridSweeper"
    # Jobs handed to the launcher at once (null: all of them).
    max_batch_size: Optional[int] = None  # noqa: UP045 (read by Hydra at run time)
    params: Optional[dict] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="trainlab_grid", node=TrainlabGridSweeperConf, provider="trainlab"
)


class TrainlabGridSweeper(BasicSweeper):
    """Hydra's BasicSweeper, skipping the jobs of a resumed sweep that have a result."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from trainlab.app.sweeps.compose import compose_once

        # The launcher takes the configs composed to check each batch.
        super().setup(
            hydra_context=compose_once(hydra_context), task_function=task_function, config=config
        )

    def sweep(self, arguments: list) -> Any:
        from trainlab.app.sweeps.grid import run_grid

        return run_grid(self, arguments)
