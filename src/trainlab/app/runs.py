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

`RunFolder` (a Hydra callback) decides before Hydra writes anything, and holds an
exclusive lock on the folder for the whole run (the OS drops it when the process ends,
however it ends), so a second process never writes into a run in progress. Hydra's
`.hydra/` bookkeeping is written by the job once the config has been checked
(`record_run_config`), so a refused command leaves every folder byte for byte as it was.
Only the main process claims a folder and writes into it; other ranks write nothing there.
Imports no torch unless a checkpoint has to be read.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from trainlab.app.config import check_resume
from trainlab.app.processes import join as join_process_group
from trainlab.app.run_files import (
    check_folder_path,
    check_readable,
    check_writable,
    lock_run_folder,
    unlock_run_folder,
    unreadable_yaml,
)
from trainlab.engine.distributed import broadcast_object, is_main_process, world_size
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
        if path.name == LAST.parent.name and (path / LAST.name).is_file():
            path = path.parent  # a run's checkpoints/ folder: that run
        folder, checkpoint = path, path / LAST
        if not checkpoint.is_file() and not (folder / "metrics.json").exists():
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
            f"resume={resume}: that run already finished; its results are in "
            f"{folder / 'metrics.json'}. Start a new run instead (drop resume=)"
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
    if (processes := payload.get("world_size", 1)) != world_size():
        raise TrainlabError(
            f"cannot resume from {source}: it was written by a run on {processes} process(es) "
            f"and this one has {world_size()}; resume with {processes} (torchrun "
            "--nproc_per_node / trainer.devices), or start a new run (drop resume=)"
        )
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
    found = unfinished_runs(candidates, overrides)
    return found[0] if found else None


def unfinished_runs(candidates: list[Path], overrides: list[str]) -> list[Path]:
    """The unfinished runs among `candidates` begun with `overrides`, newest save first.

    A folder whose saved config files cannot be read is no candidate (skipped quietly).
    """
    wanted = _without_resume(overrides)
    found = []
    for folder in candidates:
        try:
            if not is_unfinished(folder) or _unreadable(folder):
                continue
            if _without_resume(_read_overrides(folder)) == wanted:
                found.append(((folder / LAST).stat().st_mtime, folder))
        except OSError:  # vanished or unreadable meanwhile
            continue
    return [folder for _, folder in sorted(found, key=lambda pair: -pair[0])]


def _unreadable(folder: Path) -> bool:
    names = ("overrides.yaml", "config.yaml")
    paths = [folder / ".hydra" / name for name in names]
    return any(path.is_file() and unreadable_yaml(path) for path in paths)


def _read_overrides(folder: Path) -> list[str]:
    path = folder / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _without_resume(overrides: list[str]) -> list[str]:
    # Where outputs go is not what a run is: the candidates already share that place.
    return sorted(o for o in overrides if _key(o) != "resume" and not _key(o).startswith("paths."))


def claim(planned: Path) -> Path:
    """Create a new run's folder: `planned`, or `planned_2`, `_3`, ... if another run has it.

    Creating the folder is the claim (an atomic step), so two runs started in the same
    second cannot both take it. A run that fails at once removes its empty folder and the
    empty `runs/` above it, maybe just as another run claims beside it: then the parent
    is made again.
    """
    for number in itertools.count(1):
        folder = planned if number == 1 else planned.with_name(f"{planned.name}_{number}")
        for _ in range(100):
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                break
            except FileNotFoundError:
                planned.parent.mkdir(parents=True, exist_ok=True)
        else:
            raise TrainlabError(f"cannot create {folder}: its parent folder keeps disappearing")
    raise AssertionError("unreachable")


def choose_run_folder(config: DictConfig) -> Path:
    """The folder this run writes to (see the module docstring), locked for this process
    when it is the main one; raises if the run must not start."""
    check_resume(config)
    planned = Path(str(config.hydra.run.dir)).absolute()
    explicit = any(_key(o) == "hydra.run.dir" for o in config.hydra.overrides.hydra)
    check_folder_path(planned, "hydra.run.dir" if explicit else "paths.root_dir")
    resume = config.get("resume")
    if resume == "auto":
        candidates = [planned] if explicit else _subfolders(planned.parent)
        found = unfinished_runs(candidates, list(config.hydra.overrides.task))
        if found and (folder := _resume_any(found, config)) is not None:
            return folder
    elif resume is not None:
        folder, checkpoint = locate(str(resume))
        if explicit and folder != planned:
            raise ConfigError(
                f"hydra.run.dir={planned} and resume={resume} name different folders; drop "
                "hydra.run.dir: a resumed run continues in its own folder"
            )
        check_readable(folder, str(resume))
        return _resume(folder, checkpoint, config, str(resume))
    # A new run.
    if not is_main_process():  # only the main process claims and locks a folder
        check_new_run_folder(planned)
        return planned
    if explicit:
        check_new_run_folder(planned)
        planned.mkdir(parents=True, exist_ok=True)
        lock_run_folder(planned)
        check_new_run_folder(planned)  # another process may have written meanwhile
        return planned
    folder = claim(planned)
    lock_run_folder(folder)
    return folder


def _resume_any(found: list[Path], config: DictConfig) -> Path | None:
    """The newest of the unfinished runs `found` whose checkpoint reads, locked; None if
    none reads. A truncated or corrupt one is skipped, with one short note."""
    from trainlab.engine.checkpoint import UnreadableCheckpoint

    skipped, chosen = [], None
    for folder in found:
        try:
            chosen = _resume(folder, folder / LAST, config, "auto")
            break
        except UnreadableCheckpoint:
            skipped.append(folder)
    if skipped:
        others = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        print(f"note: resume=auto skipped {skipped[0]}{others}: unreadable {LAST}", file=sys.stderr)
    return chosen


def _resume(folder: Path, checkpoint: Path, config: DictConfig, resume: str) -> Path:
    """Lock `folder` for this run, after checking it may be resumed from `checkpoint`."""
    from trainlab.engine.checkpoint import UnreadableCheckpoint, load_checkpoint

    if is_main_process():
        lock_run_folder(folder)
    try:
        try:
            payload = load_checkpoint(checkpoint)
        except UnreadableCheckpoint as ex:
            raise UnreadableCheckpoint(
                f"resume={resume}: cannot resume from {checkpoint} ({ex.reason}); resume "
                "from another checkpoints/*.pt of that run, or start a new run (drop resume=)",
                ex.reason,
            ) from None
        check_compatible(payload, current_settings(config), checkpoint)
        if is_main_process():
            check_writable(folder)
    except BaseException:
        unlock_run_folder(folder)
        raise
    return folder


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []


# How this run's config is to be saved (`.hydra/`), once it has been checked; None:
# nothing to write (another rank, or already written).
_pending_record: Callable[[DictConfig], None] | None = None


def defer_run_config(write: Callable[[DictConfig], None] | None) -> None:
    """Have `record_run_config(cfg)` call `write(cfg)`: saving the config waits until the
    job has checked it, so that a refused command leaves the folder as it was."""
    global _pending_record
    _pending_record = write


def record_run_config(cfg: DictConfig) -> None:
    """Save the run's config as deferred (see `defer_run_config`); a no-op otherwise."""
    global _pending_record
    write, _pending_record = _pending_record, None
    if write is not None:
        write(cfg)


def _write_hydra_files(subdir: str, cfg: DictConfig) -> None:
    """`.hydra/` (config.yaml, hydra.yaml, overrides.yaml), as Hydra writes it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.output_subdir = subdir  # as Hydra would have saved it
    files = {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
        "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task),
    }
    write_files(Path(hydra_cfg.runtime.output_dir) / subdir, files)


def write_files(folder: Path, files: dict[str, str]) -> None:
    from trainlab.engine.checkpoint import atomic_write_bytes

    for name, text in files.items():
        atomic_write_bytes(folder / name, text.encode())


class RunFolder(Callback):
    """Hydra callback: point `hydra.run.dir` at the folder this run writes to, locked."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder, failure = None, None
        try:
            join_process_group(config)  # several processes: rank 0 alone chooses
            if is_main_process():
                folder = choose_run_folder(config)
        except (TrainlabError, OSError, RuntimeError) as ex:
            failure = ex
        if world_size() > 1:  # one folder for every process, or one refusal for all
            chosen = broadcast_object(None if folder is None else str(folder))
            if chosen is None and failure is None:
                sys.exit(2)  # rank 0 refused the run, and said why
            folder = Path(chosen) if chosen is not None else folder
        if failure is not None:
            # Hydra turns an exception raised here into a warning and runs the job anyway,
            # so a refusal (or a folder that cannot be made) ends the process here, before
            # anything is written.
            exit_with(failure)
        with read_write(config.hydra):
            config.hydra.run.dir = str(folder)
            if not is_main_process():
                write_nothing(config.hydra)
            elif config.hydra.output_subdir is not None:
                subdir = str(config.hydra.output_subdir)
                defer_run_config(functools.partial(_write_hydra_files, subdir))
                config.hydra.output_subdir = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from trainlab.app.sweeps.grid import is_grid_sweep, resume_sweep_folder

        try:
            if is_grid_sweep(config):  # the same grid command again: finish the last one
                resume_sweep_folder(config)
            elif config.get("resume") is not None:
                raise ConfigError(
                    "resume=... continues one run and does not apply to this sweep (-m); "
                    "resume a sweep's job by running its command with resume=<its folder>"
                )
        except (TrainlabError, OSError) as ex:
            exit_with(ex)


def write_nothing(hydra: DictConfig) -> None:
    """Hydra settings for a process other than the main one: no `.hydra/`, no train.log,
    and on the console only its errors."""
    with read_write(hydra), open_dict(hydra):
        hydra.output_subdir = None
        hydra.job_logging.root.level = "ERROR"
        handlers = hydra.job_logging.get("handlers") or {}
        if "file" in handlers:
            del handlers["file"]
            root = hydra.job_logging.root
            root.handlers = [name for name in root.handlers if name != "file"]
