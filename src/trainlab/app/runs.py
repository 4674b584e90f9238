"""Run folders: where a run writes, and which checkpoint a resumed run continues from.

A new run gets a folder of its own (two runs started in the same second get
`<date>_<time>` and `<date>_<time>_2`) and never writes into a folder that holds another
run: anything besides what Hydra writes first (`.hydra/`, `train.log`). `resume=...`
continues a run in its own folder:

- `resume=auto`: the most recent unfinished run (it has `checkpoints/last.pt` but no
  `metrics.json`) beside the folder a new run would get, whose command-line overrides,
  `resume` aside, are this command's; with none, a new run. With `hydra.run.dir=FOLDER`,
  only that folder is considered (a fixed folder a requeued job resumes or starts).
- `resume=FOLDER`: that run, from its `checkpoints/last.pt`;
  `resume=FOLDER/checkpoints/NAME.pt`: that run, from that checkpoint.

`RunFolder` (a Hydra callback) decides before Hydra writes anything, so a refused command
leaves every folder as it was. Only the main process claims a folder and writes Hydra's
bookkeeping into it; other ranks write nothing there. Imports no torch unless a checkpoint
has to be read.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from trainlab.app.config import check_resume
from trainlab.engine.distributed import is_main_process
from trainlab.errors import ConfigError, TrainlabError, exit_with

# What Hydra writes into a run folder before the job starts.
BOOKKEEPING = {".hydra", "train.log"}
LAST = Path("checkpoints") / "last.pt"


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds a run's results (anything besides Hydra's bookkeeping)."""
    return folder.is_dir() and any(p.name not in BOOKKEEPING for p in folder.iterdir())


def is_unfinished(folder: Path) -> bool:
    return (folder / LAST).is_file() and not (folder / "metrics.json").exists()


def check_new_run_folder(folder: Path) -> None:
    # Only the main process writes into the folder: another rank finds it in use by it.
    if holds_run(folder) and is_main_process():
        raise TrainlabError(
            f"{folder} already holds a run and a new run never writes into another's folder: "
            f"continue it with resume={folder}, or let the new run get its own folder "
            "(leave hydra.run.dir at its default)"
        )


def locate(resume: str) -> tuple[Path, Path]:
    """The run folder and the checkpoint that `resume=PATH` names."""
    path = Path(resume).absolute()
    hint = "pass resume=auto, a run folder, or a checkpoints/*.pt file inside one"
    if not path.exists():
        raise TrainlabError(f"resume={resume}: no such run folder or checkpoint file; {hint}")
    if path.is_dir():
        folder, checkpoint = path, path / LAST
        if not checkpoint.is_file():
            raise TrainlabError(f"resume={resume}: no {LAST} in that folder, nothing to resume")
    else:
        # The folder Hydra made for the run, else the one holding `checkpoints/`.
        folder = next((p for p in path.parents if (p / ".hydra").is_dir()), None)
        if folder is None and path.parent.name == LAST.parent.name:
            folder = path.parent.parent
        if folder is None:
            raise TrainlabError(f"resume={resume}: that file is not inside a run folder; {hint}")
        checkpoint = path
    if (folder / "metrics.json").exists():
        raise TrainlabError(
            f"resume={resume}: that run already finished (it has metrics.json); "
            "start a new run instead (drop resume=)"
        )
    return folder, checkpoint


def resume_source(cfg: DictConfig) -> Path | None:
    """The checkpoint this run continues from, or None for a new run (inside the job)."""
    resume = cfg.get("resume")
    if resume is None:
        return None
    if resume == "auto":  # RunFolder pointed the run at the folder to resume, if any
        folder = Path(cfg.paths.output_dir)
        return folder / LAST if is_unfinished(folder) else None
    return locate(str(resume))[1]


def check_compatible(payload: dict[str, Any], current: dict[str, Any], source: Path) -> None:
    """Refuse a checkpoint whose model, data or seed differ from this run's.

    `current` holds this run's resolved `model` and `data` nodes and its `seed`. A
    different model would not take the weights; a different data node or seed would
    change the split or the batch order (a batch size too), so the run would not continue
    as it began.
    """
    if payload.get("version", 1) < 2:
        raise TrainlabError(
            f"cannot resume from {source}: it was written by an older trainlab without the "
            "loop state a resume needs; start a new run"
        )
    saved = payload.get("config") or {}
    differences = []
    for group in ("model", "data"):
        differences += _differences(saved.get(group), current[group], group)
    if current["seed"] is not None and saved.get("seed") != current["seed"]:
        differences.append(f"seed ({saved.get('seed')} in the checkpoint, {current['seed']} now)")
    if differences:
        raise TrainlabError(
            f"cannot resume from {source}: model and data settings must match the "
            f"checkpoint's, and these differ: {'; '.join(differences)}. Resume with the "
            "checkpoint's values, or start a new run (drop resume=)"
        )


def _differences(saved: Any, current: Any, key: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        return [
            difference
            for name in sorted(set(saved) | set(current), key=str)
            for difference in _differences(saved.get(name), current.get(name), f"{key}.{name}")
        ]
    if saved == current:
        return []
    return [f"{key} ({saved!r} in the checkpoint, {current!r} now)"]


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Settings other than model, data and seed that differ from the checkpoint's config
    (a resumed run may change them, e.g. `trainer.max_epochs`; they are reported)."""
    ignored = ("model", "data", "seed", "resume", "paths")
    return [
        difference
        for key in sorted(set(saved) | set(current))
        if key not in ignored
        for difference in _differences(saved.get(key), current.get(key), key)
    ]


def current_settings(cfg: DictConfig) -> dict[str, Any]:
    """What `check_compatible` compares, resolved from `cfg`."""
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "seed": cfg.get("seed"),
    }


def find_unfinished(candidates: list[Path], overrides: list[str]) -> Path | None:
    """The most recently saved unfinished run among `candidates` begun with `overrides`."""
    wanted = _without_resume(overrides)
    found = [
        folder
        for folder in candidates
        if is_unfinished(folder) and _without_resume(_read_overrides(folder)) == wanted
    ]
    return max(found, key=lambda folder: (folder / LAST).stat().st_mtime, default=None)


def _read_overrides(folder: Path) -> list[str]:
    path = folder / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _without_resume(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if _key(o) != "resume")


def claim(planned: Path) -> Path:
    """Create a new run's folder: `planned`, or `planned_2`, `_3`, ... if another run has it.

    Creating the folder is the claim (an atomic step), so two runs started in the same
    second cannot both take it.
    """
    planned.parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        folder = planned if number == 1 else planned.with_name(f"{planned.name}_{number}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise AssertionError("unreachable")


def choose_run_folder(config: DictConfig) -> Path:
    """The folder this run writes to (see the module docstring); raises if it must not run."""
    check_resume(config)
    planned = Path(str(config.hydra.run.dir)).absolute()
    explicit = any(_key(o) == "hydra.run.dir" for o in config.hydra.overrides.hydra)
    resume = config.get("resume")
    folder = checkpoint = None
    if resume == "auto":
        candidates = [planned] if explicit else _subfolders(planned.parent)
        folder = find_unfinished(candidates, list(config.hydra.overrides.task))
        checkpoint = folder / LAST if folder is not None else None
    elif resume is not None:
        folder, checkpoint = locate(str(resume))
    if folder is None:  # a new run
        if explicit or not is_main_process():  # only the main process claims a folder
            check_new_run_folder(planned)
            return planned
        return claim(planned)
    if explicit and folder != planned:
        raise ConfigError(
            f"hydra.run.dir={planned} and resume={resume} name different folders; drop "
            "hydra.run.dir: a resumed run continues in its own folder"
        )
    from trainlab.engine.checkpoint import load_checkpoint

    check_compatible(load_checkpoint(checkpoint), current_settings(config), checkpoint)
    return folder


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []


class RunFolder(Callback):
    """Hydra callback: point `hydra.run.dir` at the folder this run writes to."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            folder = choose_run_folder(config)
        except (TrainlabError, OSError) as ex:
            # Hydra turns an exception raised here into a warning and runs the job anyway,
            # so a refusal (or a folder that cannot be made) ends the process here, before
            # anything is written.
            exit_with(ex)
        with read_write(config.hydra):
            config.hydra.run.dir = str(folder)
            if not is_main_process():
                write_nothing(config.hydra)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") is not None:
            exit_with(
                ConfigError(
                    "resume=... continues one run and does not apply to sweeps (-m); "
                    "resume a sweep's job by running its command with resume=<its folder>"
                )
            )


def write_nothing(hydra: DictConfig) -> None:
    """Hydra settings for a process other than the main one: no `.hydra/`, no train.log."""
    with read_write(hydra), open_dict(hydra):
        hydra.output_subdir = None
        handlers = hydra.job_logging.get("handlers") or {}
        if "file" in handlers:
            del handlers["file"]
            root = hydra.job_logging.root
            root.handlers = [name for name in root.handlers if name != "file"]
