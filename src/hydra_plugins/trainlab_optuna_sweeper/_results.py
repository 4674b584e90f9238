"""What a study comes to: optuna_results.yaml (counts, the best trial and how to rerun it)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.trainlab_optuna_sweeper._search_space import to_config_value
from trainlab.app.sweeps.optuna_study import OVERRIDES, RUN_DIR, interrupted

log = logging.getLogger(__name__)

RESULTS_FILE = "optuna_results.yaml"


def summarize(
    study: optuna.Study, config: DictConfig, url: str, parser: OverridesParser
) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    cut = interrupted(trials)

    def count(state: TrialState, was_cut: bool = False) -> int:
        return sum(t.state == state and (t.number in cut) == was_cut for t in trials)

    results: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": url,
        "direction": study.direction.name.lower(),
        "objective": config.objective,
        "trials": {
            "complete": count(TrialState.COMPLETE),
            "pruned": count(TrialState.PRUNED),
            "failed": count(TrialState.FAIL),
            "interrupted": count(TrialState.FAIL, was_cut=True),
        },
        "best": None,
    }
    if results["trials"]["complete"]:
        best = study.best_trial
        run_dir = best.user_attrs.get(RUN_DIR)
        results["objective"] = _objective_name(run_dir) or config.objective
        results["best"] = {
            "number": best.number,
            "value": best.value,
            "params": {
                key: to_config_value(value, best.distributions[key], parser)
                for key, value in best.params.items()
            },
            "overrides": best.user_attrs.get(OVERRIDES, []),
            "run_dir": run_dir,
        }
    return results


def _objective_name(run_dir: str | None) -> str | None:
    """The objective a job resolved (objective=auto: val/acc or val/r2), from metrics.json."""
    path = Path(run_dir or "") / "metrics.json"
    try:
        return json.loads(path.read_text())["objective"]["name"]
    except (OSError, ValueError, KeyError):
        return None


def write_yaml_atomic(payload: dict[str, Any] | DictConfig, path: Path) -> None:
    """`payload` as YAML at `path`, whole or not at all (a config is written as it is,
    without a copy)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            config = payload if isinstance(payload, DictConfig) else OmegaConf.create(payload)
            handle.write(OmegaConf.to_yaml(config))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def log_results(results: dict[str, Any], path: Path) -> None:
    counts = results["trials"]
    log.info(
        f"study '{results['study_name']}': {counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['failed']} failed, {counts['interrupted']} "
        f"interrupted (and run again); results in {path}"
    )
    best = results["best"]
    if best is None:
        log.warning("no trial completed, so there is no best trial")
        return
    log.info(
        f"best trial {best['number']}: {results['objective']} = {best['value']:.4f}  "
        + " ".join(f"{k}={short_number(v)}" for k, v in best["params"].items())
    )
    log.info(f"run it again: python train.py {' '.join(best['overrides'])}")


def short_number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
