"""The Sweeper Hydra instantiates for `hydra/sweeper=trainlab_optuna`.

It keeps its options and the launcher; their checks (`_options.py`) and the search itself
(`_study.py`) import Optuna only when a sweep starts, so `python train.py --help` stays
quick.
"""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class TrainlabOptunaSweeper(Sweeper):
    """Random or TPE search with Optuna: one trial per job, pruning, resume from storage."""

    def __init__(
        self,
        sampler: str,
        seed: int | None,
        n_trials: int,
        n_jobs: int,
        direction: str,
        study_name: str,
        storage: str | None,
        pruner: str,
        tpe: dict[str, Any],
        random: dict[str, Any],
        median: dict[str, Any],
        successive_halving: dict[str, Any],
        params: dict[str, str] | None = None,
        continue_with_changes: bool = False,
        heartbeat_interval: int = 10,
        grace_period: int = 60,
        workers: int = 1,
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.seed = seed
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.pruner = pruner
        # Arguments of each sampler and pruner class, by their option name.
        self.options = {
            "tpe": dict(tpe),
            "random": dict(random),
            "median": dict(median),
            "successive_halving": dict(successive_halving),
            "none": {},
        }
        self.params = dict(params or {})
        self.continue_with_changes = continue_with_changes
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.workers = workers
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from trainlab.app.sweeps.compose import compose_once

        # The launcher takes the configs the sweeper composed to check each job.
        self.hydra_context = hydra_context = compose_once(hydra_context)
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> dict[str, Any]:
        """Run the study to `n_trials` trials; return what optuna_results.yaml holds."""
        from hydra_plugins.trainlab_optuna_sweeper._options import check_workers
        from hydra_plugins.trainlab_optuna_sweeper._study import run_study
        from hydra_plugins.trainlab_optuna_sweeper._workers import fork_workers, wait_workers
        from trainlab.engine.preemption import Stopped
        from trainlab.engine.threads import share_cores

        check_workers(self)
        children: list[int] = []
        try:
            if self.workers > 1:
                work = lambda: run_study(self, arguments, forked=True)  # noqa: E731
                children = fork_workers(self.workers, work)
            results = run_study(self, arguments)
        except BaseException as ex:
            wait_workers(children, ending=ex)
            if isinstance(ex, (KeyboardInterrupt, Stopped)) and not getattr(ex, "how", None):
                ex.how = "run the same command again: the study resumes where it stopped"
            raise
        finally:
            share_cores(1)  # this process's later runs (a caller's) have the cores again
        wait_workers(children, ending=None)
        return results
