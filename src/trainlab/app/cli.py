"""The command line: `trainlab [command] [overrides]`, `python -m trainlab`, `python train.py`.

`trainlab` alone trains (Hydra composes the config); `trainlab predict ...` predicts with a
trained run. Any error ends as one line on stderr. Kept free of torch imports so `--help`
and config errors return quickly; `--help` imports no Hydra either.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from trainlab.errors import Preempted, exit_with

# Subcommands; anything else on the command line is a training override.
COMMANDS = {
    "train": "train an experiment (the default command)",
    "predict": "predict with a trained run: predict run=<run folder> input=<file>",
    "export": "export a trained run, verified: export run=<run folder> format=onnx|...",
    "compress": "quantize or prune a trained run: compress run=<run folder> method=quantize",
    "explain": "feature attributions of a trained run: explain run=<run folder>",
    "serve": "serve a trained run over HTTP: serve run=<run folder> [port=8000]",
}
# Commands whose module has a `<name>_main(argv)` that prints its own --help.
PLAIN_COMMANDS = {
    "compress": "trainlab.app.compress",
    "explain": "trainlab.app.explain",
}


def _verbose() -> bool:
    return os.environ.get("TRAINLAB_VERBOSE") == "1"


def cli(argv: list[str] | None = None) -> None:
    """The `trainlab` console command (and `python -m trainlab`, `python train.py`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # A user's own classes (`_target_: mypkg.models.Net`) import from the folder they work
    # in, as `python -m` would find them; a console script's sys.path lacks it.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    command = argv[0] if argv and argv[0] in COMMANDS else "train"
    if argv and argv[0] in COMMANDS:
        argv = argv[1:]
    wants_help = any(arg in ("-h", "--help") for arg in argv)
    if command in PLAIN_COMMANDS:
        import importlib

        module = importlib.import_module(PLAIN_COMMANDS[command])
        main(functools.partial(getattr(module, f"{command}_main"), argv))
        return
    if command == "predict":
        if wants_help:
            from trainlab.app.help import print_predict_help

            print_predict_help()
            return
        from trainlab.app.predict import predict_main

        main(functools.partial(predict_main, argv))
        return
    if command == "export":
        from trainlab.app import export  # torch-free until it runs

        if wants_help:
            print(f"{export.__doc__.strip()}\n\n{export.USAGE}")
            return
        main(functools.partial(export.export_main, argv))
        return
    if command == "serve":
        from trainlab.app import serve  # torch-free until it loads the run

        if wants_help:
            print(f"{serve.__doc__.strip()}\n\n{serve.USAGE}\nMore: docs/serve.md")
            return
        main(functools.partial(serve.serve_main, argv))
        return
    if wants_help:
        from trainlab.app.help import print_help

        print_help(argv)
        return
    if any(arg.lstrip("+").startswith("trainer.devices=") for arg in argv):
        try:
            _start_processes(argv)  # exits when it started processes
        except Exception as ex:
            exit_with(ex)
    sys.argv = [sys.argv[0], *argv]
    main(_hydra_train)


def own_the_process() -> None:
    """Allow the process-wide settings (the allocator's thresholds) that only trainlab's own
    commands make, never `import trainlab`."""
    from trainlab.app import experiment

    experiment.OWNS_PROCESS = True


def main(hydra_main: Callable[[], Any]) -> None:
    """Call a `@hydra.main` function; on error print one line and exit with status 2.

    Hydra prints its own multi-line report unless HYDRA_FULL_ERROR=1, in which case it
    re-raises; we set it so the error reaches us. A user who sets HYDRA_FULL_ERROR=1
    themselves gets the full traceback. (Their setting is back in place afterwards, for a
    caller that runs the command in its own process.)
    """
    users_setting = os.environ.get("HYDRA_FULL_ERROR")
    if users_setting == "1":
        os.environ["TRAINLAB_VERBOSE"] = "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from trainlab.app.config import register_resolvers

    register_resolvers()
    from trainlab.engine import preemption

    try:
        with preemption.stops_raise():  # a stop anywhere ends with a line, never silently
            hydra_main()
    except (KeyboardInterrupt, preemption.Stopped) as ex:
        exit_stopped(ex, None)
    except Exception as ex:
        if _verbose():
            raise
        exit_with(ex)
    finally:
        if users_setting is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = users_setting
    exit_now()


def exit_now() -> NoReturn:
    """End a finished command without the interpreter's teardown.

    With torch loaded, Python's orderly shutdown (freeing every module and object one by
    one) takes 0.5-1.5 s and does nothing a finished run needs: its results, checkpoints
    and event files are written and closed. So flush what is buffered and leave. The
    orderly exit is kept whenever something may still need it: a profiler or tracer
    (cProfile, coverage) that writes its results at exit, a child process, a thread that
    is still running.
    """
    busy = (
        sys.gettrace() is not None
        or sys.getprofile() is not None
        or any(t.is_alive() and not t.daemon for t in threading.enumerate()[1:])
        or _has_children()
    )
    if busy:
        sys.exit(0)
    logging.shutdown()  # flushes and closes every handler (train.log)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _has_children() -> bool:
    if "multiprocessing" not in sys.modules:
        return False
    import multiprocessing

    return bool(multiprocessing.active_children())


def report_errors(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a Hydra task so an error inside the job also ends as one line, exit status 2
    (143 for a run stopped by SIGTERM or SIGUSR1).

    (Raised out of the job, Hydra would first print its own 'Error executing job' line.)
    In a multirun the job prints the line and re-raises instead: the launcher records the
    job as failed and the sweeper decides. Our Optuna sweeper records a FAIL and goes on;
    Hydra's basic (grid) sweeper still ends with the first failed job's error, after the
    jobs of its batch have run.
    """

    @functools.wraps(task)
    def wrapper(cfg: Any) -> Any:
        try:
            return task(cfg)
        except BaseException as ex:
            if isinstance(ex, SystemExit):
                raise
            _remove_if_empty(cfg)
            if isinstance(ex, Preempted) and _in_multirun():
                # A sweep's job stopped by a signal stops the sweep, as Ctrl-C does: Hydra's
                # job runner and the launcher let a `Stopped` through (the job is not
                # recorded as failed, and no other job starts).
                from trainlab.engine.preemption import Stopped

                stop = Stopped(ex.signal_name)
                stop.how = resume_hint(cfg)
                raise stop from ex
            stopped = not isinstance(ex, Exception)  # Ctrl-C, or a stop signal (`Stopped`)
            if stopped and _in_multirun():
                ex.how = resume_hint(cfg)  # the sweep ends; its line says how to go on
                raise
            if not isinstance(ex, (Exception, KeyboardInterrupt)):
                ex.run_folder = _output_dir(cfg)  # `main` says where it stopped
                raise
            if isinstance(ex, KeyboardInterrupt):
                exit_stopped(ex, cfg)
            if _verbose() and not isinstance(ex, Preempted):  # a stop keeps its status
                raise
            if _in_multirun():
                from trainlab.errors import one_line

                print(f"error: {one_line(ex)}", file=sys.stderr)
                raise
            from trainlab.app.processes import told_by_another_process

            if told_by_another_process(ex):  # several processes: one line for the run
                sys.exit(getattr(ex, "exit_code", 2))
            exit_with(ex)

    return wrapper


def resume_hint(cfg: Any) -> str:
    """How to go on after a sweep stopped in this job: the same command resumes it."""
    from trainlab.app.runs import LAST

    folder = _output_dir(cfg)
    if "optuna_trial" in cfg:
        return "run the same command again: the study resumes, and this trial runs again"
    if folder is not None and (folder / LAST).is_file():
        return f"run the same command again: the sweep resumes, {folder} from its {LAST}"
    return "run the same command again: the sweep resumes, and this job runs again"


def exit_stopped(ex: BaseException, cfg: Any) -> NoReturn:
    """End a command stopped by a signal outside the training loop: one line saying where
    it stopped and how to continue; status 130 for SIGINT, 143 for SIGTERM / SIGUSR1."""
    from trainlab.app.runs import LAST
    from trainlab.engine import preemption

    interrupted = isinstance(ex, KeyboardInterrupt)
    name = "SIGINT" if interrupted else ex.signal_name
    folder = _output_dir(cfg) if cfg is not None else getattr(ex, "run_folder", None)
    where = f"{name} while {preemption.phase}"
    if getattr(ex, "how", None):
        how = ex.how
    elif folder is not None and (folder / "metrics.json").is_file():
        how = f"the run had finished: its results are in {folder / 'metrics.json'}"
    elif folder is not None and (folder / LAST).is_file():
        how = f"{folder} keeps {LAST}: to finish the run, run the same command with resume=auto"
    else:
        how = "nothing was saved to resume from: run the command again"
    print(f"{'interrupted' if interrupted else 'stopped'}: {where}; {how}", file=sys.stderr)
    sys.exit(130 if interrupted else 143)


def _output_dir(cfg: Any) -> Path | None:
    try:
        return Path(cfg.paths.output_dir)
    except Exception:  # no Hydra runtime to resolve it from
        return None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _remove_if_empty(cfg: Any) -> None:
    from trainlab.app.runs import holds_run

    if (run_dir := _output_dir(cfg)) is None:
        return
    # A folder holding only what Hydra wrote before the job started is removed, so a bad
    # command leaves no empty runs behind; so are the runs/ and outputs/ folders made for
    # it, when nothing else is in them.
    if run_dir.is_dir() and not holds_run(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        root = Path(cfg.paths.root_dir).resolve()
        for parent in run_dir.resolve().parents:
            if not parent.is_relative_to(root):
                break
            try:
                parent.rmdir()  # only an empty folder
            except OSError:
                break


@report_errors
def train_task(cfg: Any) -> float:
    """The Hydra task of `trainlab train`: one run, or one job of a sweep.

    Module-level, so the launchers that pickle it for another process (joblib, submitit)
    refer to it by name.
    """
    from trainlab.app.experiment import run

    own_the_process()
    return run(cfg)


def _start_processes(argv: list[str]) -> None:
    """`trainer.devices=N` (N > 1) outside a launcher: start the N processes of the run."""
    from trainlab.app.processes import devices_on_command_line, launch
    from trainlab.engine.distributed import launched_world_size

    if launched_world_size() == 1 and (count := devices_on_command_line(argv)) > 1:
        launch(argv, count)


def _hydra_train() -> Any:
    import hydra

    from trainlab.app.checks import listed_groups_chosen
    from trainlab.app.help import check_config_dirs, option_values

    check_config_dirs(sys.argv[1:])
    names = option_values(sys.argv[1:], "--config-name", "-cn")
    sys.argv[1:] = listed_groups_chosen(sys.argv[1:], names[-1] if names else None)
    configs = "pkg://trainlab.configs"  # the shipped configs, inside the installed package
    return hydra.main(version_base="1.3", config_path=configs, config_name="train")(train_task)()
