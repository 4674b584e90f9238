"""A whole experiment from Python, without Hydra's runtime: `compose` a config, `run` it.

    cfg = trainlab.compose(["model=cnn", "trainer.max_epochs=2"])
    result = trainlab.run(cfg)           # seeding, run folder, training, test, metrics.json
    print(result.objective, result.test, result.run_dir)

`run` goes through `trainlab.app.experiment.run`, the function the `trainlab` command calls
for each job, so both give the same numbers. It leaves the process as it found it: the
signal handlers, logging's handlers and levels, and torch's thread count are put back.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from trainlab.app import runs
from trainlab.app.config import check_resume, register_resolvers
from trainlab.app.run_files import lock_run_folder, unlock_run_folder
from trainlab.errors import ConfigError

log = logging.getLogger("trainlab")


@dataclass
class RunResult:
    """What `run` reports; `metrics.json` in `run_dir` holds the same and more."""

    objective: float  # the value of `cfg.objective` (a finder: what it suggests)
    objective_name: str
    run_dir: Path
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    best_checkpoint: Path | None = None
    seed: int | None = None


def compose(
    overrides: Sequence[str] = (),
    *,
    config_name: str = "train",
    config_dir: str | Path | None = None,
) -> DictConfig:
    """The config `trainlab OVERRIDES` would run, from trainlab's shipped configs.

    `config_dir` adds a folder of the user's own configs, as `trainlab --config-dir` does:
    its groups' options join trainlab's, and `config_name` may be a primary config of its
    own (one that lists `train` in its defaults extends trainlab's).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from trainlab.app.checks import check_options, listed_groups_chosen

    register_resolvers()
    overrides = listed_groups_chosen(overrides, config_name)
    primary_folder = None
    if config_dir is not None:
        folder = Path(config_dir).absolute()
        if not folder.is_dir():
            raise ConfigError(f"config_dir={config_dir}: no such folder; pass a folder of configs")
        # Hydra looks for the primary config in its first folder only, and `hydra.searchpath`
        # adds the other: the user's folder first when the primary config is there.
        if (folder / f"{config_name}.yaml").is_file():
            primary_folder = str(folder)
            overrides.append("hydra.searchpath=[pkg://trainlab.configs]")
        else:
            overrides.append(f"hydra.searchpath=[file://{folder}]")
    # A caller inside its own Hydra app keeps it: set aside here, put back after.
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with (
            initialize_config_module("trainlab.configs", version_base="1.3")
            if primary_folder is None
            else initialize_config_dir(primary_folder, version_base="1.3")
        ):
            cfg = hydra_compose(config_name, overrides, return_hydra_config=True)
            # An optional group's missing option is skipped by Hydra: refused here.
            loader = GlobalHydra.instance().config_loader()
            check_options(loader, config_name, overrides, cfg.hydra.runtime.choices)
            with open_dict(cfg):  # what hydra_compose does without return_hydra_config
                del cfg["hydra"]
            return cfg
    finally:
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> RunResult:
    """Run the experiment `cfg` (from `compose`) as the `trainlab` command would.

    It writes into a new run folder, `paths.root_dir/runs/<date>_<time>[_<name>]` (in the
    current folder by default), or into `output_dir`, which must not hold another run.
    `resume=FOLDER` continues that run in its folder; `resume=auto` needs `output_dir`.
    """
    from trainlab.app import experiment

    cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
    register_resolvers()
    run_dir = choose_folder(cfg, output_dir)
    cfg.paths.output_dir = str(run_dir)
    saved = OmegaConf.to_yaml(cfg)  # written once the run has checked the config
    runs.defer_run_config(lambda _: runs.write_files(run_dir / ".hydra", {"config.yaml": saved}))
    lock_run_folder(run_dir)  # no other process writes into it meanwhile
    try:
        with logged_to(run_dir / "train.log"), process_settings_kept():
            objective = experiment.run(cfg)
    except BaseException:
        # As the command does: a run that failed before writing anything leaves no folder.
        if not runs.holds_run(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        runs.defer_run_config(None)
        unlock_run_folder(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():  # a finder: it suggests, it writes no metrics.json
        return RunResult(objective=objective, objective_name=str(cfg.mode), run_dir=run_dir)
    summary = json.loads(metrics_file.read_text())
    best = summary.get("best_checkpoint")
    return RunResult(
        objective=summary["objective"]["value"],
        objective_name=summary["objective"]["name"],
        run_dir=run_dir,
        val=summary["val"],
        test=summary["test"],
        best_checkpoint=Path(best) if best else None,
        seed=summary.get("seed"),
    )


def choose_folder(cfg: DictConfig, output_dir: str | Path | None) -> Path:
    """The run folder, made: as `trainlab.app.runs.RunFolder` chooses one for the command."""
    check_resume(cfg)
    resume = cfg.get("resume")
    if resume is not None and resume != "auto":
        folder, _ = runs.locate(str(resume))
        if output_dir is not None and Path(output_dir).absolute() != folder:
            raise ConfigError(
                f"output_dir={output_dir} and resume={resume} name different folders; drop "
                "output_dir: a resumed run continues in its own folder"
            )
        return folder
    if output_dir is not None:
        folder = Path(output_dir).absolute()
        if resume is None:
            runs.check_new_run_folder(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    if resume == "auto":
        raise ConfigError(
            "resume=auto from Python needs output_dir=<the run folder to continue or start>; "
            "or pass resume=<run folder>"
        )
    return runs.claim(planned_folder(cfg))


def planned_folder(cfg: DictConfig) -> Path:
    """The folder the command would plan for a new run: the shipped `hydra.run.dir`."""
    import hydra.core.utils  # noqa: F401 (registers the `${now:...}` resolver)

    shipped = resources.files("trainlab.configs").joinpath("hydra", "default.yaml")
    pattern = yaml.safe_load(shipped.read_text())["run"]["dir"]
    where = {"paths": {"root_dir": cfg.paths.root_dir}, "name": cfg.get("name"), "dir": pattern}
    return Path(OmegaConf.create(where).dir).absolute()


@contextmanager
def logged_to(path: Path) -> Iterator[None]:
    """trainlab's log lines also go to `path` while the block runs (as the command's
    `train.log`); the logger's level and handlers are put back after."""
    logger = logging.getLogger("trainlab")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


@contextmanager
def process_settings_kept() -> Iterator[None]:
    """torch's thread count as it was before the block (a run may choose its own)."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
