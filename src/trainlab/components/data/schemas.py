"""The settings of each shipped data set: defaults and ranges, checked before any loading.

Torch-free, so a bad `data.*` value is reported without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from trainlab.errors import ConfigError
from trainlab.schema import auto_or_bool, batch_size, positive_ints, spec


@dataclass
class SplitSchema:
    val_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    test_fraction: float = spec(0.15, gt=0.0, lt=1.0)
    scaling: str = spec("standard", choices=("standard", "minmax", "none"))
    batch_size: Any = spec(64, check=batch_size)
    eval_batch_size: int = spec(1024, ge=1)
    shuffle: bool = spec(True)
    drop_last: bool = spec(False)
    num_workers: int = spec(0, ge=0)

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
    batch_size: Any = spec(64, check=batch_size)
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


SCHEMAS: dict[str, type] = {
    "trainlab.components.data.load_digits": DigitsSchema,
    "trainlab.components.data.load_synthetic": SyntheticSchema,
    "trainlab.components.data.load_breast_cancer": TableSchema,
    "trainlab.components.data.load_diabetes": RegressionSplitSchema,
    "trainlab.components.data.load_text": TextSchema,
    "trainlab.components.data.load_text_demo": TextDemoSchema,
    "trainlab.components.data.tabular.load_table": TableFileSchema,
}
