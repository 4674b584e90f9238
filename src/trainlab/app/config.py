"""Typed schemas for every shipped component, checked before any work starts.

Hydra composes the YAML files in `configs/`; `validate(cfg)` then checks each node against
the schema registered for its `_target_`: every key known, every value of the right type
and inside its range. A node whose `_target_` is a user's own class has no schema here and
is checked by that class when it is built. The first problem found is raised as a
`ConfigError` whose message names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from itertools import combinations
from typing import Any, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from trainlab.components.metrics import TASK_METRICS, metric_names
from trainlab.errors import ConfigError, did_you_mean

PRECISIONS = ("32", "bf16-mixed", "16-mixed")  # Lightning's names

MODES = ("train", "lr_find", "batch_size_find")
INSTANTIATE_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def register_resolvers() -> None:
    """Resolvers the YAML files use; registered before Hydra composes."""
    if not OmegaConf.has_resolver("trainlab.suffix"):
        OmegaConf.register_new_resolver(
            "trainlab.suffix", lambda name: f"_{name}" if name not in (None, "") else ""
        )


def spec(
    default: Any = MISSING,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A schema field: its default plus the range or names it must stay within."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _batch_size(value: Any) -> str | None:
    if value == "full" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return "must be a positive integer or 'full' (full-batch gradient descent)"


def _device(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        return None
    return "must be one of: auto, cpu, cuda, cuda:N, mps"


def _positive_ints(value: Any) -> str | None:
    if all(isinstance(v, int) and v >= 1 for v in value):
        return None
    return "must be a list of positive integers, e.g. [256,128]"


def _unit_pair(value: Any) -> str | None:
    if len(value) == 2 and all(0.0 <= v < 1.0 for v in value):
        return None
    return "must be two numbers in [0, 1), e.g. [0.9,0.999]"


def _class_weight(value: Any) -> str | None:
    if value is None or value == "balanced":
        return None
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and v > 0 for v in value)
    ):
        return None
    return "must be null, 'balanced', or a list of positive numbers (one per class)"


def _precision(value: Any) -> str | None:
    if value in PRECISIONS:
        return None
    if (newer := {"16": "16-mixed", "bf16": "bf16-mixed"}.get(value)) is not None:
        return f"is the older name of trainer.precision={newer}: use that"
    return f"must be one of: {', '.join(PRECISIONS)}"


def _auto_or_bool(value: Any) -> str | None:
    return None if value in ("auto", True, False) else "must be one of: auto, true, false"


def _auto_or_count(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return "must be auto or a positive integer, e.g. 4"


# --- data -------------------------------------------------------------------------------
@dataclass
class SplitSchema:
    val_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    test_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    scaling: str = spec("standard", choices=("standard", "minmax", "none"))
    batch_size: Any = spec(64, check=_batch_size)
    eval_batch_size: int = spec(1024, ge=1)
    shuffle: bool = spec(True)
    drop_last: bool = spec(False)

    def cross_check(self, key: str) -> None:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                f"{key}.val_fraction + {key}.test_fraction = "
                f"{self.val_fraction + self.test_fraction:g} leaves too little to train on; "
                "keep their sum below 0.9"
            )


@dataclass
class TableSchema(SplitSchema):
    """A built-in table with nothing to set but the split and batching."""


@dataclass
class RegressionSplitSchema(SplitSchema):
    target_scaling: str = spec("standard", choices=("standard", "none"))


@dataclass
class SyntheticSchema(SplitSchema):
    n_samples: int = spec(2000, ge=20)
    n_features: int = spec(20, ge=2)
    n_informative: int = spec(10, ge=1)
    n_classes: int = spec(4, ge=2)
    class_sep: float = spec(1.0, gt=0.0)
    image_shape: list[int] | None = spec(None, check=_positive_ints)

    def cross_check(self, key: str) -> None:
        super().cross_check(key)
        if self.n_informative > self.n_features:
            raise ConfigError(
                f"{key}.n_informative={self.n_informative} exceeds "
                f"{key}.n_features={self.n_features}; lower it or add features"
            )
        if self.image_shape is not None and math.prod(self.image_shape) != self.n_features:
            shape = ",".join(map(str, self.image_shape))
            raise ConfigError(
                f"{key}.image_shape=[{shape}] holds {math.prod(self.image_shape)} values but "
                f"{key}.n_features={self.n_features}; make them match, e.g. "
                f"{key}.n_features={math.prod(self.image_shape)}"
            )


# --- text data (data=text, data=text_demo) ------------------------------------------------
TOKENIZERS = ("word", "char", "bpe", "wordpiece")


@dataclass
class TextTokensSchema:
    """Tokenization, splits and batching shared by the text datasets (no feature scaling)."""

    tokenizer: str = spec("word", choices=TOKENIZERS)
    vocab_size: int = spec(10000, ge=3)  # [PAD]=0 and [UNK]=1 included
    min_freq: int = spec(1, ge=1)
    max_length: int = spec(128, ge=1)
    lowercase: bool = spec(True)
    val_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    test_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    batch_size: Any = spec(64, check=_batch_size)
    eval_batch_size: int = spec(1024, ge=1)
    shuffle: bool = spec(True)
    drop_last: bool = spec(False)

    cross_check = SplitSchema.cross_check


@dataclass
class TextSchema(TextTokensSchema):
    path: str = spec("???")  # required: the CSV file
    text_column: str = spec("text")
    label_column: str = spec("label")


@dataclass
class TextDemoSchema(TextTokensSchema):
    n_samples: int = spec(3000, ge=100)
    label_noise: float = spec(0.05, ge=0.0, le=0.5)


# --- your own table: data=csv (trainlab.components.data.tabular.load_table) ---
def _column_names(value: Any) -> str | None:
    if all(isinstance(v, str) and v for v in value):
        return None
    return "must be a list of column names, e.g. [color,size]"


@dataclass
class TableFileSchema(RegressionSplitSchema):
    path: str | None = spec(None)  # required: checked here, the file itself when loading
    target: str | None = spec(None)  # required except for .npz (then the npz_target array)
    task: str = spec("auto", choices=("auto", "classification", "regression"))
    categorical: list[str] = spec([], check=_column_names)
    numeric: list[str] = spec([], check=_column_names)
    drop_columns: list[str] = spec([], check=_column_names)
    impute: str = spec("median", choices=("drop", "mean", "median", "most_frequent", "knn"))
    knn_neighbors: int = spec(5, ge=1)
    missing_indicator: bool = spec(False)
    categorical_impute: str = spec("most_frequent", choices=("most_frequent", "constant"))
    npz_features: str = spec("X")
    npz_target: str = spec("y")

    def cross_check(self, key: str) -> None:
        super().cross_check(key)
        if not self.path:
            raise ConfigError(
                f"{key}.path is not set: point it at a CSV, Parquet or .npz file, "
                f"e.g. {key}.path=table.csv {key}.target=label"
            )
        lists = {
            "categorical": self.categorical,
            "numeric": self.numeric,
            "drop_columns": self.drop_columns,
        }
        for (first, names), (second, others) in combinations(lists.items(), 2):
            if both := sorted(set(names) & set(others)):
                raise ConfigError(
                    f"column(s) {', '.join(both)} are in both {key}.{first} and "
                    f"{key}.{second}; name each column in one list"
                )
        for setting, names in lists.items():
            if self.target in names:
                raise ConfigError(
                    f"the target '{self.target}' is also in {key}.{setting}; "
                    "the target column is never a feature: remove it from that list"
                )
        if self.impute == "drop" and self.missing_indicator:
            raise ConfigError(
                f"{key}.missing_indicator=true needs an imputing {key}.impute "
                "(mean, median, most_frequent or knn): with drop no value is missing"
            )


# --- model --------------------------------------------------------------------------------
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")


@dataclass
class MLPSchema:
    hidden_sizes: list[int] = spec([256, 128], check=_positive_ints)
    activation: str = spec("relu", choices=ACTIVATIONS)
    dropout: float = spec(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = spec(False)


# --- loss ---------------------------------------------------------------------------------
@dataclass
class LossSchema:
    l1: float = spec(0.0, ge=0.0)  # L1 penalty on weights, added to the training loss


@dataclass
class CrossEntropySchema(LossSchema):
    label_smoothing: float = spec(0.0, ge=0.0, le=1.0)
    class_weight: Any = spec(None, check=_class_weight)


@dataclass
class BCESchema(LossSchema):
    class_weight: Any = spec(None, check=_class_weight)


@dataclass
class HuberSchema(LossSchema):
    delta: float = spec(1.0, gt=0.0)


# --- optimizers ---------------------------------------------------------------------------
@dataclass
class OptimizerSchema:
    # false: no weight decay on biases and normalisation scales (1-d parameters)
    decay_bias_and_norm: bool = spec(True)


@dataclass
class SGDSchema(OptimizerSchema):
    lr: float = spec(1e-3, gt=0.0)
    momentum: float = spec(0.0, ge=0.0, lt=1.0)
    dampening: float = spec(0.0, ge=0.0, le=1.0)
    nesterov: bool = spec(False)
    weight_decay: float = spec(0.0, ge=0.0)
    fused: bool = spec(True)

    def cross_check(self, key: str) -> None:
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ConfigError(
                f"{key}.nesterov=true needs {key}.momentum > 0 and {key}.dampening=0, "
                f"e.g. {key}.momentum=0.9"
            )


@dataclass
class AdamSchema(OptimizerSchema):
    lr: float = spec(1e-3, gt=0.0)
    betas: list[float] = spec([0.9, 0.999], check=_unit_pair)
    eps: float = spec(1e-8, gt=0.0)
    weight_decay: float = spec(0.0, ge=0.0)
    fused: bool = spec(True)


@dataclass
class RMSpropSchema(OptimizerSchema):
    lr: float = spec(1e-2, gt=0.0)
    alpha: float = spec(0.99, ge=0.0, le=1.0)
    eps: float = spec(1e-8, gt=0.0)
    momentum: float = spec(0.0, ge=0.0, lt=1.0)
    centered: bool = spec(False)
    weight_decay: float = spec(0.0, ge=0.0)


# --- learning-rate schedules --------------------------------------------------------------
@dataclass
class SchedSchema:
    interval: str = spec("epoch", choices=("step", "epoch"))


@dataclass
class StepLRSchema(SchedSchema):
    step_size: int = spec(10, ge=1)
    gamma: float = spec(0.1, gt=0.0)


@dataclass
class ExponentialLRSchema(SchedSchema):
    gamma: float = spec(0.95, gt=0.0)


@dataclass
class CosineSchema(SchedSchema):
    warmup_epochs: float = spec(0.0, ge=0.0)
    eta_min: float = spec(0.0, ge=0.0)


@dataclass
class OneCycleSchema(SchedSchema):
    max_lr: float = spec(0.01, gt=0.0)
    pct_start: float = spec(0.3, gt=0.0, lt=1.0)
    anneal_strategy: str = spec("cos", choices=("cos", "linear"))
    div_factor: float = spec(25.0, gt=0.0)
    final_div_factor: float = spec(1e4, gt=0.0)


@dataclass
class PlateauSchema(SchedSchema):
    monitor: str = spec("val/loss")
    mode: str = spec("min", choices=("min", "max"))
    factor: float = spec(0.1, gt=0.0, lt=1.0)
    patience: int = spec(5, ge=0)
    threshold: float = spec(1e-4, ge=0.0)
    min_lr: float = spec(0.0, ge=0.0)


# --- callbacks and logger -----------------------------------------------------------------
@dataclass
class EarlyStoppingSchema:
    monitor: str = spec("val/loss")
    mode: str = spec("auto", choices=("auto", "min", "max"))
    min_delta: float = spec(0.0, ge=0.0)
    patience: int = spec(0, ge=0)
    baseline: float | None = spec(None)
    restore_best_weights: bool = spec(False)
    start_from_epoch: int = spec(0, ge=0)


@dataclass
class ModelCheckpointSchema:
    dirpath: str = spec("checkpoints")
    monitor: str = spec("val/acc")
    mode: str = spec("auto", choices=("auto", "min", "max"))
    save_last: bool = spec(True)
    save_best: bool = spec(True)
    every_n_epochs: int | None = spec(1, ge=1)
    every_n_steps: int | None = spec(None, ge=1)
    keep_last: int = spec(0, ge=0)


@dataclass
class NoArgumentsSchema:
    pass


@dataclass
class FiguresSchema:
    confusion_matrix: bool = spec(True)
    pr_curves: bool = spec(True)
    scatter: bool = spec(True)
    graph: bool = spec(True)
    histograms: bool = spec(False)


@dataclass
class ProgressSchema:
    bar: Any = spec("auto", check=_auto_or_bool)


@dataclass
class TensorBoardSchema:
    log_dir: str = spec("tb")


# --- the fixed parts ------------------------------------------------------------------------
@dataclass
class TrainerSchema:
    max_epochs: int = spec(30, ge=1)
    device: str = spec("auto", check=_device)
    log_every_n_steps: int = spec(1, ge=1)
    limit_train_batches: int | None = spec(None, ge=1)
    limit_eval_batches: int | None = spec(None, ge=1)
    accumulate_grad_batches: int = spec(1, ge=1)
    gradient_clip_val: float | None = spec(None, gt=0.0)
    gradient_clip_algorithm: str = spec("norm", choices=("norm", "value"))
    nan_policy: str = spec("stop", choices=("stop", "skip"))
    max_skipped_steps: int = spec(10, ge=0)
    detect_anomaly: bool = spec(False)
    loader: str = spec("auto", choices=("auto", "tensors", "dataloader"))
    num_workers: int = spec(0, ge=0)
    pin_memory: Any = spec("auto", check=_auto_or_bool)
    num_threads: Any = spec("auto", check=_auto_or_count)
    # A string field: `precision: 32` (an integer in YAML) arrives as "32".
    precision: str = spec("32", check=_precision)
    compile: bool = spec(False)
    channels_last: Any = spec("auto", check=_auto_or_bool)
    cudnn_benchmark: Any = spec("auto", check=_auto_or_bool)
    keep_freed_memory: bool = spec(True)


@dataclass
class LRFindSchema:
    min_lr: float = spec(1e-7, gt=0.0)
    max_lr: float = spec(10.0, gt=0.0)
    num_steps: int = spec(200, ge=10)

    def cross_check(self, key: str) -> None:
        if self.min_lr >= self.max_lr:
            raise ConfigError(f"{key}.min_lr={self.min_lr:g} must be below {key}.max_lr")


@dataclass
class BatchSizeFindSchema:
    candidates: list[int] = spec([16, 32, 64, 128, 256, 512, 1024, 2048], check=_positive_ints)
    steps: int = spec(5, ge=1)
    scale_lr: str = spec("none", choices=("none", "linear", "sqrt"))


@dataclass
class CVSchema:
    folds: int | None = spec(None, ge=2)


SCHEMAS: dict[str, type] = {
    "trainlab.components.data.load_digits": TableSchema,
    "trainlab.components.data.load_synthetic": SyntheticSchema,
    "trainlab.components.data.load_breast_cancer": TableSchema,
    "trainlab.components.data.load_diabetes": RegressionSplitSchema,
    "trainlab.components.data.load_text": TextSchema,
    "trainlab.components.data.load_text_demo": TextDemoSchema,
    "trainlab.components.data.tabular.load_table": TableFileSchema,
    "trainlab.components.models.MLP": MLPSchema,
    "torch.nn.CrossEntropyLoss": CrossEntropySchema,
    "trainlab.components.losses.BCEWithLogitsLoss": BCESchema,
    "torch.nn.MSELoss": LossSchema,
    "torch.nn.L1Loss": LossSchema,
    "torch.nn.HuberLoss": HuberSchema,
    "torch.optim.SGD": SGDSchema,
    "torch.optim.Adam": AdamSchema,
    "torch.optim.AdamW": AdamSchema,
    "torch.optim.RMSprop": RMSpropSchema,
    "torch.optim.lr_scheduler.StepLR": StepLRSchema,
    "torch.optim.lr_scheduler.ExponentialLR": ExponentialLRSchema,
    "trainlab.components.optim.cosine_with_warmup": CosineSchema,
    "torch.optim.lr_scheduler.OneCycleLR": OneCycleSchema,
    "torch.optim.lr_scheduler.ReduceLROnPlateau": PlateauSchema,
    "trainlab.components.callbacks.EarlyStopping": EarlyStoppingSchema,
    "trainlab.components.callbacks.ModelCheckpoint": ModelCheckpointSchema,
    "trainlab.components.callbacks.LearningRateMonitor": NoArgumentsSchema,
    "trainlab.components.callbacks.ProgressDisplay": ProgressSchema,
    "trainlab.components.callbacks.TensorBoardFigures": FiguresSchema,
    "trainlab.components.loggers.TensorBoardLogger": TensorBoardSchema,
}


# --- CNN, Transformer, RNN and image augmentation -------------------------------------------
@dataclass
class ImageAugmentSchema:
    shift: int = spec(0, ge=0)  # pixels, along each axis
    noise: float = spec(0.0, ge=0.0)  # standard deviation


@dataclass
class DigitsSchema(SplitSchema):
    augment: ImageAugmentSchema = field(default_factory=ImageAugmentSchema)

    def cross_check(self, key: str) -> None:
        super().cross_check(key)
        if self.augment.shift >= 8:
            raise ConfigError(
                f"{key}.augment.shift={self.augment.shift} would move 8x8 digits off the "
                f"image; keep it small, e.g. {key}.augment.shift=1"
            )


@dataclass
class CNNSchema:
    channels: list[int] = spec([32, 64], check=_positive_ints)
    kernel_size: int = spec(3, ge=1)
    pooling: str = spec("max", choices=("max", "avg", "none"))
    batch_norm: bool = spec(True)
    dropout: float = spec(0.0, ge=0.0, lt=1.0)
    activation: str = spec("relu", choices=ACTIVATIONS)
    head: str = spec("avg", choices=("avg", "flatten"))


@dataclass
class TransformerSchema:
    d_model: int = spec(64, ge=1)
    nhead: int = spec(4, ge=1)
    num_layers: int = spec(2, ge=1)
    dim_feedforward: int = spec(128, ge=1)
    dropout: float = spec(0.1, ge=0.0, lt=1.0)
    activation: str = spec("gelu", choices=("relu", "gelu"))
    positional: str = spec("learned", choices=("learned", "sinusoidal"))
    pooling: str = spec("mean", choices=("mean", "cls"))
    image_tokens: str = spec("rows", choices=("rows", "patches"))
    patch_size: int = spec(2, ge=1)

    def cross_check(self, key: str) -> None:
        if self.d_model % self.nhead:
            divisors = [n for n in range(1, min(self.d_model, 16) + 1) if self.d_model % n == 0]
            raise ConfigError(
                f"{key}.d_model={self.d_model} is not divisible by {key}.nhead={self.nhead}; "
                f"pick nhead from {divisors} or change d_model"
            )


@dataclass
class RNNSchema:
    cell: str = spec("lstm", choices=("lstm", "gru"))
    embedding_dim: int = spec(64, ge=1)  # token data only
    hidden_size: int = spec(128, ge=1)
    num_layers: int = spec(1, ge=1)
    bidirectional: bool = spec(False)
    dropout: float = spec(0.0, ge=0.0, lt=1.0)


SCHEMAS.update(
    {
        "trainlab.components.data.load_digits": DigitsSchema,  # digits gain the `augment` block
        "trainlab.components.models.CNN": CNNSchema,
        "trainlab.components.models.Transformer": TransformerSchema,
        "trainlab.components.models.RNN": RNNSchema,
    }
)
# --- end of CNN, Transformer, RNN and image augmentation ------------------------------------

# Groups whose node is one component built from `_target_` (null target: switched off).
COMPONENT_GROUPS = ("data", "model", "loss", "optim", "sched", "logger")
REQUIRED_GROUPS = ("data", "model", "loss", "optim")


def check_node(node: Any, key: str, schema: type) -> Any:
    """Check one config node against `schema`; return the typed dataclass instance.

    A field whose type is itself a schema (dataclass) is a nested block of keys, e.g.
    `data.augment.shift`, checked the same way.
    """
    plain = {k: v for k, v in node.items() if k not in INSTANTIATE_KEYS}
    for name, block in _blocks(schema).items():
        if name in plain and not isinstance(plain[name], (dict, DictConfig)):
            known = ", ".join(f.name for f in fields(block))
            raise ConfigError(
                f"{key}.{name}={plain[name]!r} must be a block of keys: {known} "
                f"(set one as {key}.{name}.<key>=...)"
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
    except ConfigKeyError as ex:
        *parents, bad = str(ex.full_key or ex.key).split(".")
        where = ".".join([key, *parents])
        known = [f.name for f in fields(_nested_schema(schema, parents))]
        raise ConfigError(
            f"unknown config key '{where}.{bad}'{did_you_mean(bad, known)}; "
            f"'{where}' takes: {', '.join(known) or 'no keys'}"
        ) from None
    except ValidationError as ex:
        name = str(ex.full_key or ex.key)
        *parents, last = name.split(".")
        value = plain
        for part in name.split("."):
            value = value.get(part, ex.key) if hasattr(value, "get") else ex.key
        ftype = {f.name: f.type for f in fields(_nested_schema(schema, parents))}.get(last, "?")
        raise ConfigError(
            f"{key}.{name}={value!r} has the wrong type: expected {_type_name(ftype)}"
        ) from None
    instance = OmegaConf.to_object(merged)
    _check_fields(instance, key)
    return instance


def _blocks(schema: type) -> dict[str, type]:
    """The fields of `schema` that are nested schemas, by name."""
    hints = get_type_hints(schema)
    return {f.name: hints[f.name] for f in fields(schema) if is_dataclass(hints[f.name])}


def _nested_schema(schema: type, path: list[str]) -> type:
    for part in path:
        schema = _blocks(schema)[part]
    return schema


def _check_fields(instance: Any, key: str) -> None:
    """Ranges of every field (nested blocks included), then the schema's own cross-check."""
    for f in fields(instance):
        value = getattr(instance, f.name)
        if is_dataclass(value):
            _check_fields(value, f"{key}.{f.name}")
        else:
            _check_range(f"{key}.{f.name}", value, f.metadata, f.default)
    if hasattr(instance, "cross_check"):
        instance.cross_check(key)


def _type_name(annotation: Any) -> str:
    text = str(annotation)
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a string",
    }.get(text, text)


def _check_range(key: str, value: Any, meta: Any, default: Any = MISSING) -> None:
    if value is None or not meta:
        return
    if meta.get("choices") and value not in meta["choices"]:
        options = ", ".join(str(c) for c in meta["choices"])
        raise ConfigError(
            f"{key}={value!r} is not allowed{did_you_mean(str(value), list(meta['choices']))}; "
            f"choose one of: {options}"
        )
    if meta.get("check") and (problem := meta["check"](value)):
        raise ConfigError(f"{key}={value!r} {problem}")
    bounds = (
        ("gt", ">", lambda v, b: v > b),
        ("ge", ">=", lambda v, b: v >= b),
        ("lt", "<", lambda v, b: v < b),
        ("le", "<=", lambda v, b: v <= b),
    )
    for name, symbol, ok in bounds:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            example = f", e.g. {key}={default:g}" if isinstance(default, (int, float)) else ""
            raise ConfigError(
                f"{key}={value!r} is out of range: it must be {symbol} {bound:g}{example}"
            )


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check the whole composed config; return the typed instance of each checked node.

    Metric names (`objective`, every `monitor`) are checked against those of any task
    here, and against the data's own task by `validate_metrics` once the data is loaded.
    """
    checked: dict[str, Any] = {}
    for group in REQUIRED_GROUPS:
        if cfg.get(group) is None or cfg[group].get("_target_") is None:
            raise ConfigError(f"'{group}' needs a _target_: pick an option, e.g. {group}=...")
    for group in COMPONENT_GROUPS:
        node = cfg.get(group)
        if node is not None and (schema := SCHEMAS.get(node.get("_target_"))):
            checked[group] = check_node(node, group, schema)
    checked["trainer"] = check_node(cfg.trainer, "trainer", TrainerSchema)
    checked["cv"] = check_node(cfg.cv, "cv", CVSchema)
    checked["lr_find"] = check_node(cfg.lr_find, "lr_find", LRFindSchema)
    checked["batch_size_find"] = check_node(
        cfg.batch_size_find, "batch_size_find", BatchSizeFindSchema
    )
    if cfg.mode not in MODES:
        raise ConfigError(
            f"mode={cfg.mode!r} is not allowed{did_you_mean(str(cfg.mode), list(MODES))}; "
            f"choose one of: {', '.join(MODES)}"
        )
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and (schema := SCHEMAS.get(node.get("_target_"))):
            checked[f"callbacks.{name}"] = check_node(node, f"callbacks.{name}", schema)

    check_resume(cfg)
    seed = cfg.get("seed")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise ConfigError(f"seed={seed!r} must be an integer in [0, 2**32) or null (draw one)")
    # `auto` (the objective resolved for the data's task) stands until the data is loaded.
    any_task = sorted({n for task in TASK_METRICS for n in metric_names(task)}, key=_metric_order)
    _check_metric_names(cfg, ["auto", *any_task], "a logged metric")
    return checked


def check_resume(cfg: DictConfig) -> None:
    """`resume` is null, `auto` or a path, and only for a training run."""
    resume = cfg.get("resume")
    if resume is None:
        return
    if not isinstance(resume, str) or not resume:
        raise ConfigError(
            f"resume={resume!r} must be auto, a run folder, or a checkpoint file inside one"
        )
    if cfg.get("mode", "train") != "train":
        raise ConfigError(
            f"resume=... continues a training run; it does not apply to mode={cfg.mode}"
        )
    if cfg.get("cv") is not None and cfg.cv.get("folds"):
        raise ConfigError(
            "resume=... does not apply to cross-validation (cv.folds) yet; rerun the command"
        )


def validate_metrics(cfg: DictConfig, task: str) -> None:
    """Every `monitor` and the (resolved) objective must name a metric this task logs."""
    _check_metric_names(cfg, list(metric_names(task)), f"logged for a {task} task")


def _metric_order(name: str) -> tuple[int, str]:
    return ({"train": 0, "val": 1, "test": 2}[name.split("/")[0]], name)


def _check_metric_names(cfg: DictConfig, allowed: list[str], what: str) -> None:
    monitored = {"objective": cfg.objective}
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and "monitor" in node:
            monitored[f"callbacks.{name}.monitor"] = node.monitor
    if cfg.get("sched") is not None and "monitor" in cfg.sched:
        monitored["sched.monitor"] = cfg.sched.monitor
    for key, tag in monitored.items():
        if tag not in allowed:
            raise ConfigError(
                f"{key}={tag!r} is not {what}{did_you_mean(str(tag), allowed)}; "
                f"choose one of: {', '.join(allowed)}"
            )
