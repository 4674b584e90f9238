"""Bad input gets words, not tracebacks: a table of mistakes, each ending in one line.

Each must end with exit status 2 and ONE line on stderr that names the problem and the fix,
print no traceback, create no run folder, and leave an earlier run's files untouched.

The table runs in-process through the command's own error path (`train_in_process`); a few
rows also run through the real `train.py`, to hold the contract for the process itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, train_cli, train_in_process

from trainlab.app.experiment import run

# (arguments, words the one line must contain)
CASES = [
    # mistyped keys, groups and options
    (["optim.lrr=0.1"], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    (["modle=mlp"], "unknown config key 'modle' (did you mean"),
    (["model=foo"], "unknown option model=foo; choose one of:"),
    (["optim=adamm"], "unknown option optim=adamm (did you mean 'adam'?)"),
    (["+trainer.epochs=3"], "unknown config key 'trainer.epochs'"),
    (["optim.lr=0.1=2"], "cannot parse the override"),
    # Hydra's override mistakes, in a user's words
    (["+optim.lr=0.1"], "+optim.lr=0.1 adds a key the config already has: set it without"),
    (["~optim.foo"], "~optim.foo deletes a key the config does not have: check its spelling"),
    (["~optim.lr=5"], "~optim.lr=5 deletes optim.lr only when it is 5, and it is 0.001: write"),
    (["model@x=mlp"], "model@x=... moves config group 'model' to package 'x', which this config"),
    (["=3"], "an override lacks its key before '=': write key=value, e.g. optim.lr=0.01"),
    # wrong types
    (["optim.lr=abc"], "optim.lr='abc' has the wrong type: expected a number"),
    (["trainer.max_epochs=ten"], "trainer.max_epochs='ten' has the wrong type"),
    (["model.batch_norm=maybe"], "model.batch_norm='maybe' has the wrong type"),
    (["model.hidden_sizes=abc"], "model.hidden_sizes='abc' has the wrong type"),
    # out of range
    (["optim.lr=-1"], "optim.lr=-1.0 is out of range: it must be > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is out of range: it must be >= 1"),
    (["model.dropout=1.5"], "model.dropout=1.5 is out of range: it must be < 1"),
    (["data.batch_size=0"], "data.batch_size=0 must be a positive integer or 'full'"),
    (["data.batch_size=-5"], "data.batch_size=-5 must be a positive integer or 'full'"),
    (["data.val_fraction=0"], "data.val_fraction=0.0 is out of range: it must be > 0"),
    (["data.test_fraction=1.2"], "data.test_fraction=1.2 is out of range: it must be < 1"),
    (["model.hidden_sizes=[0]"], "must be a list of positive integers"),
    (["model.activation=swish"], "choose one of: relu, gelu, tanh, sigmoid, leaky_relu"),
    (["seed=-1"], "seed=-1 must be an integer in [0, 2**32)"),
    (["loss.label_smoothing=2"], "loss.label_smoothing=2.0 is out of range: it must be <= 1"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9] must be two numbers in [0, 1)"),
    (["sched=step", "sched.step_size=0"], "sched.step_size=0 is out of range"),
    (["trainer.gradient_clip_val=0"], "trainer.gradient_clip_val=0.0 is out of range"),
    (["callbacks.early_stopping.patience=-1"], "patience=-1 is out of range: it must be >= 0"),
    (["cv.folds=1"], "cv.folds=1 is out of range: it must be >= 2"),
    (["lr_find.min_lr=1", "lr_find.max_lr=0.1"], "lr_find.min_lr=1 must be below lr_find.max_lr"),
    (["mode=predict"], "mode='predict' is not allowed; choose one of: train, lr_find"),
    (["trainer.device=tpu"], "trainer.device='tpu' must be one of: auto, cpu, cuda"),
    (["objective=val/accuracy"], "objective='val/accuracy' is not a logged metric"),
    # combinations that do not fit the data
    (["data=diabetes"], "is for classification but the data is a regression task; use loss=mse"),
    (["loss=bce"], "loss=bce needs two classes"),
    (["data=diabetes", "loss=mse", "objective=val/acc"], "is not logged for a regression task"),
    (["cv.folds=2000"], "use fewer folds, e.g. cv.folds=5"),
    (["trainer.device=cuda:99"], "trainer.device=cuda:99 but"),
    # bad data files ({files}: written by the fixture below)
    (["data=csv", "data.path={files}/missing.csv", "data.target=label"], "file not found"),
    (["data=csv", "data.path={files}/empty.csv", "data.target=label"], "the file is empty"),
    (
        ["data=csv", "data.path={files}/pets.csv", "data.target=lable"],
        "no column 'lable' in data.path=",
    ),
    (
        [
            "data=csv",
            "data.path={files}/text_in_number.csv",
            "data.target=label",
            "data.numeric=[weight]",
        ],
        "should hold numbers but holds text such as 'heavy'",
    ),
    (["data=csv", "data.path={files}/single.csv", "data.target=label"], "has a single class"),
    # a checkpoint from another model ({interrupted}: a run whose process died)
    (
        ["resume={interrupted}", "model.hidden_sizes=[32]"],
        "model.hidden_sizes ([256, 128] in the checkpoint, [32] now)",
    ),
]


# One row of each kind through the real train.py: an error while composing, in the data,
# and in a checkpoint (the last two after Hydra has made the run folder).
IN_A_PROCESS = ["optim.lrr=0.1", "data=csv data.path={files}/missing.csv data.target=label"]
IN_A_PROCESS += ["resume={interrupted} model.hidden_sizes=[32]"]


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def snapshot(folder: Path) -> tuple[list[str], dict[str, str]]:
    """Every path under `folder` (empty folders too) and every file's hash."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")), fingerprint(folder)


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """Runs that every bad command must leave exactly as they were: a finished one, and one
    whose process died before it finished (no metrics.json); plus the data files."""
    cwd = tmp_path_factory.mktemp("bad-inputs")
    for name in ("finished", "interrupted"):
        cfg = compose_config(
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.device=cpu",
            output_dir=cwd / "outputs" / "runs" / f"2026-01-01_00-00-00_{name}",
        )
        run(cfg)
    (interrupted,) = (cwd / "outputs" / "runs").glob("*_interrupted")
    (interrupted / "metrics.json").unlink()

    files = cwd / "files"
    files.mkdir()
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "weight": rng.normal(5, 1, 60).round(2),
            "color": rng.choice(["red", "blue"], 60),
            "label": rng.choice(["cat", "dog"], 60),
        }
    )
    table.to_csv(files / "pets.csv", index=False)
    (files / "empty.csv").write_text("")
    with_text = table.astype({"weight": object})
    with_text.loc[7, "weight"] = "heavy"
    with_text.to_csv(files / "text_in_number.csv", index=False)
    table.assign(label="cat").to_csv(files / "single.csv", index=False)
    return cwd


def filled_in(args: list[str], earlier_run: Path) -> list[str]:
    (interrupted,) = (earlier_run / "outputs" / "runs").glob("*_interrupted")
    args = [a.format(files=earlier_run / "files", interrupted=interrupted) for a in args]
    short = (
        [] if any(a.startswith("trainer.max_epochs") for a in args) else ["trainer.max_epochs=1"]
    )
    return [*args, *short]


def assert_one_line(result, words: str) -> None:
    """Exit status 2 and exactly one stderr line, naming the problem, with no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(("args", "words"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_gets_one_line(earlier_run: Path, args: list[str], words: str) -> None:
    before = snapshot(earlier_run / "outputs")
    result = train_in_process(*filled_in(args, earlier_run), cwd=earlier_run)
    assert_one_line(result, words)
    assert snapshot(earlier_run / "outputs") == before  # nothing new, nothing changed


@pytest.mark.parametrize("row", IN_A_PROCESS)
def test_bad_input_ends_the_process_with_one_line(earlier_run: Path, row: str) -> None:
    (words,) = [words for args, words in CASES if " ".join(args) == row]
    before = snapshot(earlier_run / "outputs")
    result = train_cli(*filled_in(row.split(" "), earlier_run), cwd=earlier_run)
    assert_one_line(result, words)
    assert snapshot(earlier_run / "outputs") == before  # nothing new, nothing changed


def test_unwritable_output_folder(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = train_cli("trainer.max_epochs=1", f"paths.root_dir={blocker}/out", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "is a file, not a folder" in line and "paths.root_dir" in line
    assert blocker.read_text() == "not a folder"


def test_table_is_big_enough() -> None:
    assert len(CASES) + 1 >= 30  # the unwritable folder above is one more
