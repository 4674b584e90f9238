"""Every file in configs/ composes and runs a one-epoch smoke run; the README lists them all."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re

import pytest
from conftest import CONFIG_DIR, SMOKE, read_metrics
from omegaconf import DictConfig, OmegaConf

from trainlab.components.metrics import TASK_METRICS

# Groups whose options are chosen on the command line (paths and hydra are plumbing).
GROUPS = [
    "regularization",
    "data",
    "model",
    "loss",
    "optim",
    "sched",
    "trainer",
    "callbacks",
    "logger",
    "experiment",
    "debug",
]


# `data=csv` reads a file: TABLE_CSV stands for the one the `table_csv` fixture writes.
TABLE = ["data.path=TABLE_CSV", "data.target=label"]

# Options that need particular companions to make sense (a regression loss needs
# regression data, and so on).
COMPANIONS = {
    ("data", "csv"): TABLE,
    ("experiment", "csv_mlp"): TABLE,
    ("data", "diabetes"): ["loss=mse"],
    ("loss", "bce"): ["data=breast_cancer"],
    ("loss", "mse"): ["data=diabetes"],
    ("loss", "mae"): ["data=diabetes"],
    ("loss", "huber"): ["data=diabetes"],
    # Token data needs a token model.
    ("data", "text"): ["model=transformer", "data.path=reviews.csv"],
    ("data", "text_demo"): ["model=rnn"],
    ("data", "dataset"): ["data.train._target_=user_datasets.DigitsDataset"],
    ("data", "image_folder"): ["data.path=photos"],
}
# Options that read a file: (group, option) -> (fixture that writes one, config key). Its
# path, appended to the companions, replaces their placeholder (the last override wins).
FILES = {
    ("data", "text"): ("text_csv", "data.path"),
    ("data", "csv"): ("table_csv", "data.path"),
    ("experiment", "csv_mlp"): ("table_csv", "data.path"),
    ("data", "image_folder"): ("image_folder", "data.path"),
}


def options():
    for group in GROUPS:
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize(("group", "option"), list(options()))
def test_every_config_runs_one_epoch(run_experiment, request, group: str, option: str) -> None:
    companions = list(COMPANIONS.get((group, option), []))
    if (group, option) in FILES:
        fixture, key = FILES[group, option]
        companions.append(f"{key}={request.getfixturevalue(fixture)}")
    objective, run_dir = run_experiment(f"{group}={option}", *companions, *SMOKE)
    metrics = read_metrics(run_dir)
    assert metrics["objective"]["value"] == objective
    assert metrics["epochs"] == 1
    assert all(math.isfinite(v) for v in metrics["test"].values())
    expected = {f"test/{name}" for name in ("loss", *TASK_METRICS[metrics["task"]])}
    assert set(metrics["test"]) == expected


# --- one default: the schema beside each component -------------------------------------------
# A shipped YAML lists every key (so `group.key=value` needs no `+`), but a value other than
# the schema's default must say why on its line: `key: value  # differs: why`.
DIFFERS = re.compile(r"#\s*differs:\s*\S")


def yaml_lines(text: str) -> dict[tuple[str, ...], str]:
    """Each `key: value` line of a block-style YAML text by its path of keys."""
    lines, stack = {}, []
    for line in text.splitlines():
        found = re.match(r"^(\s*)([A-Za-z_]\w*):", line)
        if not found:
            continue
        indent = len(found.group(1))
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, found.group(2))]
        lines[tuple(k for _, k in stack)] = line
    return lines


def undeclared_differences(
    text: str, node: DictConfig, schema: type, where: tuple[str, ...] = ()
) -> list[str]:
    """Keys of `node` (at `where` in `text`) set to another value than `schema`'s default
    without a `# differs: why` comment on their line."""
    found, lines = [], yaml_lines(text)
    default = schema()
    for spot in dataclasses.fields(schema):
        if spot.name not in node or OmegaConf.is_interpolation(node, spot.name):
            continue
        value, path = node[spot.name], (*where, spot.name)
        nested_schema = dataclasses.is_dataclass(getattr(default, spot.name))
        if dataclasses.is_dataclass(spot.type) or (isinstance(value, DictConfig) and nested_schema):
            nested = type(getattr(default, spot.name))
            found += undeclared_differences(text, value, nested, path)
            continue
        # Typed as the schema types it: `precision: 32` in YAML is the string "32".
        typed = OmegaConf.merge(OmegaConf.structured(schema), {spot.name: value})
        ours = getattr(default, spot.name)
        if OmegaConf.to_container(typed)[spot.name] != ours and not DIFFERS.search(
            lines.get(path, "")
        ):
            found.append(f"{'.'.join(path)}: {value!r} (default {ours!r})")
    return found


def shipped_nodes():
    """(file, path of keys, node, schema) for every component node of the shipped configs."""
    from trainlab.app.schemas import BatchSizeFindSchema, CVSchema, LRFindSchema
    from trainlab.engine.schemas import TrainerSchema
    from trainlab.schema import schema_for

    for group in ("data", "model", "loss", "optim", "sched", "logger", "callbacks", "trainer"):
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            node = OmegaConf.load(path)
            if group == "trainer":
                yield path, (), node, TrainerSchema
            elif group == "callbacks":
                for name, entry in node.items():
                    if name == "defaults":  # callbacks=pruning composes the default ones
                        continue
                    if entry is not None and schema_for(entry.get("_target_")):
                        yield path, (name,), entry, schema_for(entry._target_)
            elif schema_for(node.get("_target_")):
                yield path, (), node, schema_for(node._target_)
    train = OmegaConf.load(CONFIG_DIR / "train.yaml")
    runs = {"cv": CVSchema, "lr_find": LRFindSchema, "batch_size_find": BatchSizeFindSchema}
    for key, schema in runs.items():
        yield CONFIG_DIR / "train.yaml", (key,), train[key], schema


def test_shipped_yaml_restates_no_default_with_another_value_unless_it_says_why() -> None:
    nodes = list(shipped_nodes())
    assert len(nodes) >= 30  # every group was found
    found = [
        f"{path.relative_to(CONFIG_DIR)}: {problem}"
        for path, where, node, schema in nodes
        for problem in undeclared_differences(path.read_text(), node, schema, where)
    ]
    assert not found, f"say `# differs: why` on the line, or drop the value: {found}"


def test_a_yaml_that_differs_silently_is_caught() -> None:
    from trainlab.components.callbacks.schemas import EarlyStoppingSchema
    from trainlab.components.models.schemas import MLPSchema

    text = "early_stopping:\n  patience: 10\n  mode: auto\nprogress:\n  patience: 3\n"
    node = OmegaConf.create(text).early_stopping
    assert undeclared_differences(text, node, EarlyStoppingSchema, ("early_stopping",)) == [
        "early_stopping.patience: 10 (default 0)"
    ]
    said = text.replace("patience: 10", "patience: 10  # differs: noisy val/loss")
    assert undeclared_differences(said, node, EarlyStoppingSchema, ("early_stopping",)) == []
    mlp = "hidden_sizes: [64]  # one layer\n"
    assert undeclared_differences(mlp, OmegaConf.create(mlp), MLPSchema) == [
        "hidden_sizes: [64] (default [256, 128])"
    ]


# Data loaders hand what their signature does not name (**options) on to these.
DATA_HELPERS = (
    "trainlab.components.data.datasets.split_and_scale",
    "trainlab.components.data.text_datasets.text_bundle",
    "trainlab.components.data.datasets.DataBundle",
)


def signature_defaults(target: str) -> dict[str, object]:
    from hydra.utils import get_object

    parameters = inspect.signature(get_object(target)).parameters.values()
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in parameters
        if p.default is not inspect.Parameter.empty
    }


def signature_disagreements(target: str, schema: type, helpers: tuple[str, ...] = ()) -> list[str]:
    default = schema()
    found = []
    for source in (target, *helpers):
        for name, value in signature_defaults(source).items():
            if name in {f.name for f in dataclasses.fields(schema)}:
                ours = getattr(default, name)
                if not dataclasses.is_dataclass(ours) and value != ours:
                    found.append(f"{source}({name}={value!r}) but the schema says {ours!r}")
    return found


def test_every_class_signature_agrees_with_its_schema() -> None:
    from trainlab.engine.schemas import TrainerSchema
    from trainlab.schema import all_schemas

    found = []
    for target, schema in all_schemas().items():
        data = target.startswith("trainlab.components.data.")
        # text_bundle serves the text datasets only.
        helpers = [h for h in DATA_HELPERS if "text" not in h or "text" in target] if data else []
        found += signature_disagreements(target, schema, tuple(helpers))
    # The Trainer takes channels_last already resolved from `auto` (a bool).
    found = found + [
        problem
        for problem in signature_disagreements("trainlab.engine.trainer.Trainer", TrainerSchema)
        if "channels_last" not in problem
    ]
    assert not found, found
    assert "trainlab.components.models.MLP" in all_schemas()


def test_a_signature_that_disagrees_is_caught() -> None:
    from trainlab.components.optim_schemas import AdamSchema

    assert signature_disagreements("torch.optim.AdamW", AdamSchema) == [
        "torch.optim.AdamW(weight_decay=0.01) but the schema says 0.0"
    ]
