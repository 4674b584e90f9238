"""Bad config values are refused, each in one line that names the key and what it takes.

In-process tables, one per kind of mistake (options of optional groups, unknown keys,
types, non-finite numbers, the run modes' settings, the words of the line), and fuzzing of
every shipped schema with values of the wrong kind; then one real process per kind for the
contract itself: exit 2, one line, no traceback, no folder.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import yaml
from conftest import compose_config, train_cli
from omegaconf import OmegaConf, open_dict

import trainlab
from trainlab.app.config import validate
from trainlab.errors import ConfigError, one_line
from trainlab.schema import all_schemas

# The generic words a line must never fall back on.
GENERIC = ("expected ?", "another type", "a value of type", "building ", "bad config value")


def compose(*overrides: str, config_dir: Path | None = None) -> Any:
    """`trainlab.compose`, with the run folder a command's Hydra would choose set."""
    return trainlab.compose([*overrides, "paths.output_dir=unused"], config_dir=config_dir)


def refusal(*overrides: str) -> str:
    """The one line a command with `overrides` gets: from composing, or from validate."""
    try:
        validate(compose(*overrides))
    except Exception as ex:  # every error must become a good line
        line = one_line(ex)
        assert "\n" not in line and len(line) < 250, line
        assert not any(word in line for word in GENERIC), line
        return line
    raise AssertionError(f"{overrides} was accepted")


# --- options of the optional groups ---------------------------------------------------------
OPTIONS = [
    (["experiment=nope"], "unknown option experiment=nope; choose one of: breast_cancer_mlp,"),
    (
        ["experiment=digits_mpl"],
        "unknown option experiment=digits_mpl (did you mean 'digits_mlp'?)",
    ),
    (["experiment=[digits_mlp,nope]"], "unknown option experiment=nope"),
    (["+experiment=nope"], "unknown option experiment=nope"),
    (["regularization=nope"], "unknown option regularization=nope"),
    (["regularization=strnog"], "(did you mean 'strong'?); choose one of: dropout, l1, l2,"),
    (["debug=nope"], "unknown option debug=nope; choose one of: anomaly, fast, overfit"),
    (["debug=fsat"], "unknown option debug=fsat (did you mean 'fast'?)"),
    (["hparams_search=nope"], "unknown option hparams_search=nope; choose one of: optuna_mlp,"),
    (["+debug=[fast,nope]"], "unknown option debug=nope"),
    (["model=nope"], "unknown option model=nope; choose one of: cnn, mlp, rnn, transformer"),
]


@pytest.mark.parametrize(("overrides", "words"), OPTIONS, ids=[o[0] for o, _ in OPTIONS])
def test_a_missing_option_of_any_group_is_refused(overrides: list[str], words: str) -> None:
    assert words in refusal(*overrides)


def test_the_options_that_exist_still_compose() -> None:
    cfg = trainlab.compose(["experiment=digits_cnn", "debug=fast", "regularization=strong"])
    assert cfg.trainer.max_epochs == 1 and cfg.model.dropout == 0.5
    assert trainlab.compose(["+experiment=digits_mlp"]).name == "digits_mlp"  # '+' works too


def test_the_options_of_a_config_dir_count(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nname: mine\ntrainer:\n  max_epochs: 2\n"
    )
    cfg = trainlab.compose(["experiment=mine"], config_dir=tmp_path)
    assert (cfg.name, cfg.trainer.max_epochs) == ("mine", 2)
    with pytest.raises(ConfigError, match=r"experiment=mien \(did you mean 'mine'\?\)"):
        trainlab.compose(["experiment=mien"], config_dir=tmp_path)
    # An experiment file without its package line would set nothing: named, not skipped.
    (tmp_path / "experiment" / "flat.yaml").write_text("name: flat\n")
    with pytest.raises(ConfigError, match=r"landed under 'experiment:'.*# @package _global_"):
        validate(compose("experiment=flat", config_dir=tmp_path))


# --- unknown keys ---------------------------------------------------------------------------
UNKNOWN_KEYS = [
    (["+foo=1"], "unknown config key 'foo'; the top level takes: data, model, loss,"),
    (["+seeed=3"], "unknown config key 'seeed' (did you mean 'seed'?)"),
    (["+objetive=val/acc"], "unknown config key 'objetive' (did you mean 'objective'?)"),
    (["+trainer.foo=1"], "unknown config key 'trainer.foo'; 'trainer' takes: max_epochs,"),
    (["+trainer.max_epoch=3"], "unknown config key 'trainer.max_epoch' (did you mean"),
    (["+model.whatever=3"], "unknown config key 'model.whatever'; 'model' takes: hidden_sizes"),
    (["+optim.lrr=0.1"], "unknown config key 'optim.lrr' (did you mean 'lr'?)"),
    (["sched=step", "+sched.gama=0.5"], "unknown config key 'sched.gama' (did you mean 'gamma'?)"),
    (["+data.augment.shfit=1"], "unknown config key 'data.augment.shfit' (did you mean 'shift'"),
    (["+cv.fold=3"], "unknown config key 'cv.fold' (did you mean 'folds'?)"),
    (["+lr_find.steps=3"], "unknown config key 'lr_find.steps' (did you mean 'num_steps'?)"),
    (["+callbacks.early_stopping.patient=3"], "(did you mean 'patience'?)"),
    (["+callbacks.foo=1"], "callbacks.foo=1 is not a callback: give it a _target_"),
    (["+loss.smoothing=0.1"], "unknown config key 'loss.smoothing'"),
    (["+logger.dir=x"], "unknown config key 'logger.dir'"),
]


@pytest.mark.parametrize(("overrides", "words"), UNKNOWN_KEYS, ids=[o[-1] for o, _ in UNKNOWN_KEYS])
def test_an_unknown_key_is_refused(overrides: list[str], words: str) -> None:
    assert words in refusal(*overrides)


def test_a_user_class_takes_keys_of_its_own() -> None:
    """No schema for a user's own `_target_`: its extra keys are its business."""
    cfg = compose("loss._target_=custom_parts.NaNOnCalls", "+loss.nan_on_calls=[3]")
    assert "loss" not in validate(cfg)
    validate(compose("+callbacks.slow._target_=custom_parts.Slowdown"))


# --- types: a boolean is never a number, a string or a count --------------------------------
TYPES = [
    (["seed=true"], "seed=True has the wrong type: it must be an integer in [0, 2**32)"),
    (["seed=false"], "seed=False has the wrong type"),
    (["seed=1.5"], "seed=1.5 has the wrong type"),
    (["seed=abc"], "seed='abc' has the wrong type"),
    (["seed=[1]"], "seed=[1] has the wrong type"),
    (["trainer.max_epochs=true"], "trainer.max_epochs=True has the wrong type: expected an"),
    (["trainer.max_epochs=2.0"], "trainer.max_epochs=2.0 has the wrong type"),
    (["optim.lr=false"], "optim.lr=False has the wrong type: expected a number"),
    (["optim.lr=[0.1]"], "optim.lr=[0.1] has the wrong type: expected a number"),
    (["data.batch_size=true"], "data.batch_size=True must be a positive integer or 'full'"),
    (["data.batch_size=null"], "data.batch_size=null must be a positive integer or 'full'"),
    (["data.shuffle=-5"], "data.shuffle=-5 has the wrong type: expected true or false"),
    (["data.shuffle=yes"], "data.shuffle='yes' has the wrong type: expected true or false"),
    (["model.batch_norm=1"], "model.batch_norm=1 has the wrong type: expected true or false"),
    (["trainer.compile=0"], "trainer.compile=0 has the wrong type"),
    (["loss.label_smoothing=true"], "loss.label_smoothing=True has the wrong type"),
    (["callbacks.early_stopping.patience=true"], "patience=True has the wrong type"),
    (["trainer.num_threads=true"], "trainer.num_threads=True must be auto or a positive integer"),
    (["trainer.pin_memory=1"], "trainer.pin_memory=1 must be one of: auto, true, false"),
    (["model.hidden_sizes=[true]"], "model.hidden_sizes=[True] has the wrong type: it must be"),
    (["model.hidden_sizes=[1.5]"], "model.hidden_sizes=[1.5] has the wrong type"),
    (["optim.betas=[true,0.9]"], "optim.betas=[True, 0.9] has the wrong type"),
    (["name=true"], "name=True has the wrong type"),
    (["resume=true"], "resume=True has the wrong type"),
    (["model.activation=true"], "model.activation=True has the wrong type: expected a string"),
    (["data=csv", "data.path=t.csv", "data.target=true"], "data.target=True has the wrong type"),
    (["data=csv", "data.path=t.csv", "data.target=y", "data.categorical=[true]"], "[True]"),
    # A block for a list field, beside data.train's block: the line names the list field.
    (
        [
            "data=dataset",
            "data.train._target_=user_datasets.DigitsDataset",
            "data.input_shape={a:1}",
        ],
        "data.input_shape={'a': 1} has the wrong type",
    ),
    # A number outside a field's choices of numbers.
    (
        ["data=image_folder", "data.path=photos", "data.channels=-5"],
        "data.channels=-5 is not allowed",
    ),
]


@pytest.mark.parametrize(("overrides", "words"), TYPES, ids=[o[-1] for o, _ in TYPES])
def test_a_value_of_the_wrong_type_is_refused(overrides: list[str], words: str) -> None:
    assert words in refusal(*overrides)


# --- numbers that are not finite ------------------------------------------------------------
NOT_FINITE = [
    (["optim.lr=inf"], "optim.lr=inf is not a finite number: give a finite value, e.g. optim.lr="),
    (["optim.lr=nan"], "optim.lr=nan is not a finite number"),
    (["optim.lr=-inf"], "optim.lr=-inf is not a finite number"),
    (["optim.weight_decay=inf"], "optim.weight_decay=inf is not a finite number"),
    (["optim.eps=nan"], "optim.eps=nan is not a finite number"),
    (["optim=sgd", "optim.momentum=nan"], "optim.momentum=nan is not a finite number"),
    (["optim.betas=[0.9,nan]"], "optim.betas=[0.9, nan]"),
    (["sched=onecycle", "sched.max_lr=inf"], "sched.max_lr=inf is not a finite number"),
    (["sched=onecycle", "sched.div_factor=inf"], "sched.div_factor=inf is not a finite"),
    (["sched=step", "sched.gamma=nan"], "sched.gamma=nan is not a finite number"),
    (["sched=exponential", "sched.gamma=inf"], "sched.gamma=inf is not a finite number"),
    (["sched=cosine", "sched.eta_min=inf"], "sched.eta_min=inf is not a finite number"),
    (["sched=cosine", "sched.warmup_epochs=inf"], "sched.warmup_epochs=inf is not a finite"),
    (["sched=plateau", "sched.min_lr=inf"], "sched.min_lr=inf is not a finite number"),
    (["trainer.gradient_clip_val=inf"], "trainer.gradient_clip_val=inf is not a finite number:"),
    (["loss.class_weight=[1,inf]"], "loss.class_weight=[1, inf] holds a number that is not"),
    (["loss=huber", "data=diabetes", "loss.delta=inf"], "loss.delta=inf is not a finite"),
    (["loss.l1=inf"], "loss.l1=inf is not a finite number"),
    (["model.dropout=nan"], "model.dropout=nan is not a finite number"),
    (["data.val_fraction=nan"], "data.val_fraction=nan is not a finite number"),
    (["data.augment.noise=inf"], "data.augment.noise=inf is not a finite number"),
    (["callbacks.early_stopping.min_delta=inf"], "min_delta=inf is not a finite number"),
    (["callbacks.early_stopping.baseline=nan"], "baseline=nan is not a finite number"),
    (["lr_find.max_lr=inf"], "lr_find.max_lr=inf is not a finite number"),
    (["data=synthetic", "data.class_sep=inf"], "data.class_sep=inf is not a finite number"),
]


@pytest.mark.parametrize(("overrides", "words"), NOT_FINITE, ids=[o[-1] for o, _ in NOT_FINITE])
def test_a_number_that_is_not_finite_is_refused(overrides: list[str], words: str) -> None:
    assert words in refusal(*overrides)


# --- the run modes' and the top level's settings --------------------------------------------
RUN_SETTINGS = [
    (["cv.folds=-3"], "cv.folds=-3 is out of range: it must be >= 2"),
    (["cv.folds=abc"], "cv.folds='abc' has the wrong type: expected an integer (or null)"),
    (["cv.folds=2.5"], "cv.folds=2.5 has the wrong type"),
    (["cv.folds=1"], "cv.folds=1 is out of range: it must be >= 2"),
    (["cv.folds=true"], "cv.folds=True has the wrong type"),
    (["cv.folds=[3]"], "cv.folds=[3] has the wrong type"),
    (["cv=5"], "cv=5 must be a block of keys: folds"),
    (["lr_find.num_steps=true"], "lr_find.num_steps=True has the wrong type"),
    (["lr_find.num_steps=5"], "lr_find.num_steps=5 is out of range: it must be >= 10"),
    (["lr_find.min_lr=-1"], "lr_find.min_lr=-1.0 is out of range: it must be > 0"),
    (["lr_find.min_lr=1", "lr_find.max_lr=0.1"], "lr_find.min_lr=1 must be below lr_find.max"),
    (["batch_size_find.candidates=[true]"], "batch_size_find.candidates=[True] has the wrong type"),
    (
        ["batch_size_find.candidates=[]"],
        "batch_size_find.candidates=[] must be a list of positive integers to try",
    ),
    (["batch_size_find.steps=0"], "batch_size_find.steps=0 is out of range"),
    (["batch_size_find.scale_lr=quadratic"], "choose one of: none, linear, sqrt"),
    (["mode=5"], "mode='5' is not allowed; choose one of: train, lr_find, batch_size_find"),
    (["mode=lr_fnd"], "mode='lr_fnd' is not allowed (did you mean 'lr_find'?)"),
    (["mode=true"], "mode=True has the wrong type"),
    (["objective=val/acc2"], "objective='val/acc2' is not a logged metric (did you mean"),
    (["objective=5"], "objective=5 is not a logged metric"),
    (["name=a/b"], "name='a/b' must be a short label for the run folder's name, without '/'"),
    (["name=.."], "name='..' must be a short label"),
    (["name=[a]"], "name=['a'] has the wrong type"),
    (["resume=[a]"], "resume=['a'] has the wrong type"),
    (["resume=auto", "mode=lr_find"], "resume=... continues a training run"),
]


@pytest.mark.parametrize(("overrides", "words"), RUN_SETTINGS, ids=[o[-1] for o, _ in RUN_SETTINGS])
def test_a_bad_run_setting_is_refused(overrides: list[str], words: str) -> None:
    assert words in refusal(*overrides)


def test_cross_validation_is_validated_before_it_starts(tmp_path: Path) -> None:
    """cv.folds=-3 once reached range(-3) and ended in an IndexError."""
    from trainlab.app.experiment import run

    cfg = compose_config("cv.folds=-3", output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"cv\.folds=-3 is out of range"):
        run(cfg)


# --- the words: fuzzing every shipped schema ------------------------------------------------
# The values a command line can give, as Hydra parses them.
WRONG = [True, False, "abc", [1, 2], [True], {"a": 1}, None, math.nan, math.inf, -5, 1.5, ""]
COMPANIONS = {
    "csv": ["data.path=t.csv", "data.target=y"],
    "text": ["data.path=t.csv"],
    "image_folder": ["data.path=photos"],
    "dataset": ["data.train._target_=user_datasets.DigitsDataset"],
}


def shipped_options() -> dict[str, tuple[str, str]]:
    """A shipped option for each schema's `_target_`: target -> (group, option)."""
    options = {}
    for group in ("data", "model", "loss", "optim", "sched", "logger"):
        for path in sorted((Path(trainlab.__file__).parent / "configs" / group).glob("*.yaml")):
            target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
            if target is not None:
                options.setdefault(target, (group, path.stem))
    return options


def leaf_fields(schema: type, prefix: str) -> list[tuple[str, Any]]:
    """(key, type hint) of every field, those of nested blocks included."""
    hints = get_type_hints(schema)
    leaves = []
    for spot in fields(schema):
        if is_dataclass(hints[spot.name]):
            leaves += leaf_fields(hints[spot.name], f"{prefix}.{spot.name}")
        else:
            leaves.append((f"{prefix}.{spot.name}", hints[spot.name]))
    return leaves


def fuzz_cases() -> list[tuple[str, str, str, Any]]:
    options = shipped_options()
    return [
        (*options[target], key, hint)
        for target, schema in all_schemas().items()
        if target in options
        for key, hint in leaf_fields(schema, options[target][0])
    ]


@cache
def composed(group: str, option: str) -> Any:
    return compose(f"{group}={option}", *COMPANIONS.get(option, []))


@pytest.mark.slow  # 168 fields x 12 values: ~80 s of work; the tables above run by default
@pytest.mark.parametrize(("group", "option", "key", "hint"), fuzz_cases())
def test_every_wrong_value_gets_a_line_naming_its_key(group, option, key, hint) -> None:
    takes_bool = "bool" in str(hint) or hint is Any
    takes_str = "str" in str(hint)  # a name: 'nan' may be a file's or a column's
    for value in WRONG:
        cfg = copy.deepcopy(composed(group, option))
        *parents, name = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        with open_dict(cfg):
            node[name] = value
        try:
            validate(cfg)
        except ConfigError as ex:
            line = str(ex)
            assert "\n" not in line and len(line) < 250, line
            assert not any(word in line for word in GENERIC), line
            assert key in line or "data.val_fraction + " in line, line
            continue
        # What a field may take all the same: a string for a string field (a column may
        # be called 'abc' or '-5'), a number in range, null where null means something.
        assert not (isinstance(value, bool) and not takes_bool), f"{key}={value!r} accepted"
        not_finite = isinstance(value, float) and not math.isfinite(value)
        assert not (not_finite and not takes_str), f"{key}={value}"


# --- the contract, in a real process: one command of each kind ------------------------------
IN_A_PROCESS = [
    (["experiment=nope"], "unknown option experiment=nope"),
    (["-m", "experiment=digits_mlp,nope"], "unknown option experiment=nope"),
    (["-m", "+debug=[fast,nope]", "optim.lr=1e-3,1e-2"], "unknown option debug=nope"),
    (["+foo=1"], "unknown config key 'foo'"),
    (["seed=true"], "seed=True has the wrong type"),
    (["sched=onecycle", "sched.max_lr=inf"], "sched.max_lr=inf is not a finite number"),
    (["cv.folds=-3"], "cv.folds=-3 is out of range"),
    (["model.hidden_sizes={a:1}"], "model.hidden_sizes={a:1} has the wrong type"),
]


@pytest.mark.parametrize(("args", "words"), IN_A_PROCESS, ids=[a[-1] for a, _ in IN_A_PROCESS])
def test_the_command_ends_in_one_line_and_writes_nothing(tmp_path, args, words) -> None:
    """Nothing ran, not even the first job of a sweep: no folder at all. (In a sweep a bad
    value fails its own job only, as any failing job does: see test_sweeps.)"""
    result = train_cli(*args, "trainer.max_epochs=1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and words in line, line
    assert "Traceback" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


# --- checks kept for a sweep's jobs ---------------------------------------------------------
def test_a_node_checked_before_is_checked_again_when_a_value_differs() -> None:
    # A sweep keeps each node's check by its values; a value that differs, if only in type
    # (2 against 2.0 or true), is checked anew, and a kept result is a copy.
    config = compose_config("trainer.max_epochs=2", "optim.lr=0.01")
    first, again = validate(config), validate(config)
    assert again["trainer"] == first["trainer"] and again["trainer"] is not first["trainer"]
    for key, value, words in [
        ("optim.lr", 0.02, None),
        ("optim.lr", -1.0, "optim.lr=-1.0 is out of range"),
        ("trainer.max_epochs", True, "max_epochs=True has the wrong type"),
        ("trainer.max_epochs", 2.5, "trainer.max_epochs=2.5"),
    ]:
        changed = copy.deepcopy(config)
        OmegaConf.update(changed, key, value)
        if words is None:
            assert validate(changed)["optim"].lr == value
        else:
            with pytest.raises(ConfigError, match=re.escape(words)):
                validate(changed)
