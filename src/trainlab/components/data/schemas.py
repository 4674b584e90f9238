"""The settings of each shipped data set: defaults and ranges, checked before any loading.

Torch-free, so a bad `data.*` value is reported without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from trainlab.errors import ConfigError
from trainlab.schema import auto_or_bool, batch_size, is_count, positive_ints, spec


@dataclass
class SplitSchema:
    val_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    test_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    scaling: str = spec("standard", choices=("standard", "minmax", "none"))
    batch_size: Any = spec(64, check=batch_size)
    eval_batch_size: int = spec(1024, ge=1)
    shuffle: bool = spec(True)
    drop_last: bool = spec(False)
    num_workers: int = spec(0, ge=0)  # DataLoader worker processes (trainer.loader=dataloader)

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
    image_shape: list[int] | None = spec(None, check=positive_ints)

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


@dataclass
class ImageAugmentSchema:
    shift: int = spec(0, ge=0)  # pixels, along each axis
    noise: float = spec(0.0, ge=0.0)  # standard deviation
    flip: bool = spec(False)  # mirror left to right, half of the images


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


# --- text (data=text, data=text_demo) -------------------------------------------------------
TOKENIZERS = ("word", "char", "bpe", "wordpiece")
REPRESENTATIONS = ("tokens", "tfidf", "bow")
# Settings that only the token representation reads, with their defaults.
TOKEN_SETTINGS = {"tokenizer": "word", "vocab_size": 10000, "min_freq": 1, "max_length": 128}


def count_or_null(value: Any) -> str | None:
    return None if value is None or is_count(value) else "must be a positive integer or null"


def ngram_range(value: Any) -> str | None:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(is_count(v) for v in value)
        and value[0] <= value[1]
    ):
        return None
    return "must be [min_n,max_n] with 1 <= min_n <= max_n, e.g. [1,2] for words and word pairs"


@dataclass
class TextTokensSchema:
    """Tokenization (or TF-IDF / bag-of-words features), splits and batching shared by the
    text datasets (no feature scaling)."""

    representation: str = spec("tokens", choices=REPRESENTATIONS)
    tokenizer: str = spec("word", choices=TOKENIZERS)
    vocab_size: int = spec(10000, ge=3)  # [PAD]=0 and [UNK]=1 included
    min_freq: int = spec(1, ge=1)
    max_length: int = spec(128, ge=1)
    # representation=tfidf | bow (scikit-learn's vectorizer arguments)
    max_features: int | None = spec(20000, check=count_or_null)  # null: every term
    ngram_range: list[int] = spec([1, 1], check=ngram_range)
    min_df: int = spec(1, ge=1)  # terms in fewer training texts are dropped
    sublinear_tf: bool = spec(True)  # tfidf: 1 + log(count) instead of the count
    lowercase: bool = spec(True)
    val_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    test_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    batch_size: Any = spec(64, check=batch_size)
    eval_batch_size: int = spec(1024, ge=1)
    shuffle: bool = spec(True)
    drop_last: bool = spec(False)
    num_workers: int = spec(0, ge=0)

    def cross_check(self, key: str) -> None:
        SplitSchema.cross_check(self, key)  # type: ignore[arg-type]
        if self.representation == "tokens":
            return
        changed = [k for k, default in TOKEN_SETTINGS.items() if getattr(self, k) != default]
        if changed:
            setting = f"{key}.{changed[0]}={getattr(self, changed[0])}"
            raise ConfigError(
                f"{setting} applies to {key}.representation=tokens only; with "
                f"{key}.representation={self.representation} the words are scikit-learn's "
                f"(runs of 2+ letters or digits): drop {setting}, or use {key}.max_features, "
                f"{key}.ngram_range and {key}.min_df"
            )


@dataclass
class TextSchema(TextTokensSchema):
    path: str = spec("???")  # required: the CSV file
    text_column: str = spec("text")
    label_column: str = spec("label")


@dataclass
class TextDemoSchema(TextTokensSchema):
    n_samples: int = spec(3000, ge=100)
    label_noise: float = spec(0.05, ge=0.0, le=0.5)


# --- your own table: data=csv -----------------------------------------------------------------
def column_names(value: Any) -> str | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return None
    return "must be a list of column names, e.g. [color,size]"


@dataclass
class TableFileSchema(RegressionSplitSchema):
    path: str | None = spec(None)  # required: checked here, the file itself when loading
    target: str | None = spec(None)  # required except for .npz (then the npz_target array)
    task: str = spec("auto", choices=("auto", "classification", "regression"))
    categorical: list[str] = spec([], check=column_names)
    numeric: list[str] = spec([], check=column_names)
    drop_columns: list[str] = spec([], check=column_names)
    impute: str = spec("median", choices=("drop", "mean", "median", "most_frequent", "knn"))
    knn_neighbors: int = spec(5, ge=1)
    missing_indicator: bool = spec(False)
    categorical_impute: str = spec("most_frequent", choices=("most_frequent", "constant"))
    npz_features: str = spec("X")
    npz_target: str = spec("y")
    max_categories: int = spec(100, ge=2)
    streaming: Any = spec("auto", check=auto_or_bool)
    cache_dir: str = spec("outputs/cache")
    chunk_rows: int = spec(65536, ge=1)

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
        if self.streaming is True and self.impute == "knn":
            raise ConfigError(
                f"{key}.impute=knn needs the whole table in memory, which {key}.streaming=true "
                "does not hold: use median, mean, most_frequent or drop"
            )
        if self.streaming is True and str(self.path).lower().endswith(".npz"):
            raise ConfigError(
                f"{key}.streaming=true cannot read a compressed .npz in chunks: save the "
                f"arrays as .npy (np.save) or Parquet, or use {key}.streaming=false"
            )
        if self.impute == "drop" and self.missing_indicator:
            raise ConfigError(
                f"{key}.missing_indicator=true needs an imputing {key}.impute "
                "(mean, median, most_frequent or knn): with drop no value is missing"
            )


# --- items read one by one: data=image_folder, data=dataset ----------------------------------
def built_node(value: Any) -> str | None:
    """A node to build: `_target_` and its arguments, or no `_target_` (and no arguments)."""
    if value is None or (hasattr(value, "get") and "_target_" in value):
        if value is None or value.get("_target_") or len(value) == 1:
            return None
        return "has arguments but no _target_: set its _target_ (the class to build)"
    return "must be a block with a _target_: the class to build and its arguments"


def image_size(value: Any) -> str | None:
    if value is None or (positive_ints(value) is None and len(value) == 2):
        return None
    return "must be [height,width] in pixels, e.g. [32,32] (or null: keep the files' size)"


def channel_values(value: Any) -> str | None:
    numbers = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if value is None or (numbers and len(value) in (1, 3)):
        return None
    return "must be one number per channel, e.g. [0.5] or [0.485,0.456,0.406] (or null)"


@dataclass
class ItemSplitSchema:
    """Splits, batching and workers of the datasets read item by item."""

    val_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    test_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    batch_size: Any = spec(64, check=batch_size)
    eval_batch_size: int = spec(1024, ge=1)
    shuffle: bool = spec(True)
    drop_last: bool = spec(False)
    num_workers: int = spec(0, ge=0)  # DataLoader worker processes reading the items
    # Applied to each item in the workers, seeded by (seed, epoch, item): training items,
    # and validation / test items.
    transform: Any = spec(None, check=built_node)
    eval_transform: Any = spec(None, check=built_node)

    cross_check = SplitSchema.cross_check


@dataclass
class ImageFolderSchema(ItemSplitSchema):
    path: str | None = spec(None)  # required: the folder
    image_size: Any = spec(None, check=image_size)
    channels: int | None = spec(None, choices=(1, 3))
    mean: Any = spec(None, check=channel_values)
    std: Any = spec(None, check=channel_values)
    augment: ImageAugmentSchema = field(default_factory=ImageAugmentSchema)

    def cross_check(self, key: str) -> None:
        super().cross_check(key)
        if not self.path:
            raise ConfigError(
                f"{key}.path is not set: point it at a folder with one subfolder per class, "
                f"e.g. {key}.path=images"
            )
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ConfigError(f"{key}.std={list(self.std)} must hold positive numbers")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and self.channels and len(values) != self.channels:
                raise ConfigError(
                    f"{key}.{name} has {len(values)} value(s) but {key}.channels="
                    f"{self.channels}; give one per channel"
                )


@dataclass
class DatasetSchema(ItemSplitSchema):
    train: Any = spec(None, check=built_node)  # required
    val: Any = spec(None, check=built_node)
    test: Any = spec(None, check=built_node)
    task: str = spec("auto", choices=("auto", "classification", "regression"))
    num_classes: int | None = spec(None, ge=2)
    input_shape: list[int] | None = spec(None, check=positive_ints)
    vocab_size: int | None = spec(None, ge=2)
    class_names: list[str] | None = spec(None)
    name: str | None = spec(None)

    def cross_check(self, key: str) -> None:
        super().cross_check(key)
        if self.train is None or not self.train.get("_target_"):
            raise ConfigError(
                f"{key}.train is not set: give your Dataset class, e.g. "
                f"{key}.train._target_=mypkg.MyDataset"
            )


SCHEMAS: dict[str, type] = {
    "trainlab.components.data.load_digits": DigitsSchema,
    "trainlab.components.data.load_synthetic": SyntheticSchema,
    "trainlab.components.data.load_breast_cancer": TableSchema,
    "trainlab.components.data.load_diabetes": RegressionSplitSchema,
    "trainlab.components.data.load_text": TextSchema,
    "trainlab.components.data.load_text_demo": TextDemoSchema,
    "trainlab.components.data.tabular.load_table": TableFileSchema,
    "trainlab.components.data.image_folder.load_image_folder": ImageFolderSchema,
    "trainlab.components.data.own_dataset.load_dataset": DatasetSchema,
}
