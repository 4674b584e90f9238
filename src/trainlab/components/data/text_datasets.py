"""Text classification data: a CSV of (text, label) rows, or a generated demo task.

Both go through `text_bundle`: stratified splits, then fitted on the training split only
either a tokenizer giving (N, T) token-id tensors right-padded with 0
(`representation=tokens`, see `trainlab.components.data.text`) or a TF-IDF / bag-of-words
vectorizer giving (N, features) float rows (`tfidf`, `bow`, see `text_features`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainlab.components.data import files
from trainlab.components.data.datasets import DataBundle, DataInfo, Split, split_rows
from trainlab.components.data.file_checks import TEXT_FIX, TEXT_NEEDS, check_file
from trainlab.components.data.text import PADDING_IDX, UNKNOWN_IDX, TextPreprocessor
from trainlab.components.data.text_features import TextVectorizer
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")


def load_text(
    seed: int,
    path: str,
    text_column: str = "text",
    label_column: str = "label",
    **options: Any,
) -> DataBundle:
    """Classify the texts of a CSV file's `text_column` into the values of `label_column`."""
    frame = read_csv(Path(path))
    return text_bundle(
        frame,
        seed=seed,
        name="text",
        source=f"data.path={path}",
        text_column=text_column,
        label_column=label_column,
        **options,
    )


def read_csv(path: Path) -> pd.DataFrame:
    """Every cell as the string it is in the file (an empty cell is an empty string)."""
    check_file(path, "data.path", TEXT_FIX, TEXT_NEEDS)
    frame = files.read_csv(path, "data.path", dtype=str, keep_default_na=False)
    if frame.empty:
        columns = ", ".join(frame.columns)
        raise TrainlabError(f"data.path={path} has a header ({columns}) but no rows")
    return frame


def text_splits(
    frame: pd.DataFrame,
    *,
    seed: int,
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    fold: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The texts, class indices, class names and (train, val, test) rows of a table.

    The split is stratified and a function of `seed` (and `fold=(k, folds)`, see
    `split_rows`), so a baseline can be fitted on exactly the rows trainlab trains on."""
    for key, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in frame.columns:
            raise TrainlabError(
                f"data.{key}={column!r} is not a column of {source}; "
                f"columns: {', '.join(map(str, frame.columns))}"
            )
    texts = np.array([str(text) for text in frame[text_column]], dtype=object)
    empty = sum(1 for text in texts if not text.strip())
    if empty == len(texts):
        raise TrainlabError(
            f"data.text_column={text_column!r} of {source} holds no text (all {len(texts)} "
            "rows are empty or spaces); point data.text_column at the column of texts"
        )
    if empty:
        log.info(f"note: {empty} of {len(texts)} rows of {source} have an empty text")
    labels = [str(label).strip() for label in frame[label_column]]
    missing = [row for row, label in enumerate(labels) if label == ""]
    if missing:
        raise TrainlabError(
            f"{len(missing)} rows of {source} have no label in column {label_column!r} "
            f"(the first is data row {missing[0] + 1}); fill them in or remove them"
        )
    class_names = sorted_classes(labels)
    if len(class_names) < 2:
        raise TrainlabError(
            f"column {label_column!r} of {source} holds a single class ({class_names[0]!r}); "
            "a classifier needs at least two"
        )
    index = {label: i for i, label in enumerate(class_names)}
    targets = np.array([index[label] for label in labels], dtype=np.int64)
    rows = split_rows(
        targets,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=True,
        fold=fold,
        class_names=class_names,
        target=f"data.label_column={label_column!r}",
        fix="or check data.label_column",
    )
    return texts, targets, class_names, rows


def text_bundle(
    frame: pd.DataFrame,
    *,
    seed: int,
    name: str,
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    representation: str = "tokens",
    tokenizer: str = "word",
    vocab_size: int = 10000,
    min_freq: int = 1,
    max_length: int = 128,
    max_features: int | None = 20000,
    ngram_range: Sequence[int] = (1, 1),
    min_df: int = 1,
    sublinear_tf: bool = True,
    lowercase: bool = True,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    fold: tuple[int, int] | None = None,
    **batching: Any,
) -> DataBundle:
    """Split a table of texts and labels, fit the tokenizer (or vectorizer) on the training
    split, encode every split.

    `fold=(k, folds)`: fold k of a cross-validation (see `split_rows`)."""
    texts, targets, class_names, (train, val, test) = text_splits(
        frame,
        seed=seed,
        source=source,
        text_column=text_column,
        label_column=label_column,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        fold=fold,
    )
    task = "binary" if len(class_names) == 2 else "multiclass"
    if representation != "tokens":
        vectorizer = TextVectorizer.fit(
            list(texts[train]),
            representation=representation,
            max_features=max_features,
            ngram_range=ngram_range,
            min_df=min_df,
            sublinear_tf=sublinear_tf,
            lowercase=lowercase,
            source=f"the training texts of {source}",
        )
        vectorizer.check_size(len(texts))
        log.info(vectorizer.describe(len(texts)))
        rows = {"train": train, "val": val, "test": test}
        splits = {
            split: Split(vectorizer.encode(list(texts[indices])), torch.as_tensor(targets[indices]))
            for split, indices in rows.items()
        }
        info = DataInfo(
            name=name,
            task=task,
            input_kind="features",
            input_shape=(vectorizer.num_features,),
            num_classes=len(class_names),
            class_names=class_names,
        )
        return DataBundle(**splits, info=info, preprocessor=vectorizer, **batching)

    preprocessor = TextPreprocessor.fit(
        list(texts[train]),
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        min_freq=min_freq,
        max_length=max_length,
        lowercase=lowercase,
    )

    def as_split(rows: np.ndarray) -> Split:
        inputs = preprocessor.encode(list(texts[rows]))
        return Split(inputs, torch.as_tensor(targets[rows], dtype=torch.long))

    splits = {"train": as_split(train), "val": as_split(val), "test": as_split(test)}
    log.info(describe(preprocessor, splits["train"].inputs, splits["val"].inputs))
    info = DataInfo(
        name=name,
        task=task,
        input_kind="tokens",
        input_shape=(preprocessor.length,),
        num_classes=len(class_names),
        class_names=class_names,
        vocab_size=preprocessor.vocab_size,
        padding_idx=PADDING_IDX,
    )
    return DataBundle(**splits, info=info, preprocessor=preprocessor, **batching)


def sorted_classes(labels: Sequence[str]) -> list[str]:
    """The distinct labels, in numeric order when all are numbers, else alphabetical."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def describe(preprocessor: TextPreprocessor, train: torch.Tensor, val: torch.Tensor) -> str:
    """One log line: tokenizer, vocabulary, sequence length, how much is unknown or padding."""
    real = val != PADDING_IDX
    unknown = (val == UNKNOWN_IDX).sum().item() / max(real.sum().item(), 1)
    padding = 1.0 - (train != PADDING_IDX).float().mean().item()
    return (
        f"text: {preprocessor.kind} tokenizer, {preprocessor.vocab_size} token ids, "
        f"sequences of {preprocessor.length}; {unknown:.1%} of validation tokens unknown, "
        f"{padding:.1%} of training positions padding"
    )


# --- the generated demo task ---------------------------------------------------------------
ASPECTS = (
    "battery",
    "screen",
    "camera",
    "speaker",
    "keyboard",
    "price",
    "design",
    "delivery",
    "software",
    "charger",
)
POSITIVE = ("good", "great", "excellent", "reliable", "fast", "bright", "solid", "pleasant")
NEGATIVE = ("bad", "poor", "terrible", "unreliable", "slow", "dim", "flimsy", "annoying")
VERBS = ("is", "was", "seems", "feels")
INTENSIFIERS = ("", "", "", "very ", "really ", "quite ")
OPENERS = ("", "", "", "honestly, ", "overall ", "i think ", "after a week ", "to be fair ")
JOINERS = (" and ", " but ", " while ", ", ", " although ")
# Asides carry no sentiment; one has a "not" that negates nothing.
ASIDES = (
    "",
    "",
    "",
    " I bought it for my sister.",
    " It arrived on a Monday.",
    " The box was huge.",
    " I did not read the manual.",
    " My old one broke last year.",
)
DEMO_CLASSES = ("negative", "mixed", "positive")


def demo_reviews(seed: int, n_samples: int = 3000, label_noise: float = 0.05) -> pd.DataFrame:
    """Short product reviews labelled negative, mixed or positive (columns text, label).

    A review comments on one to three aspects ("the battery is not bad"); a clause's
    sentiment is its adjective's, flipped by "not". Positive reviews have only positive
    clauses, negative ones only negative clauses, mixed ones both. Because "not" may
    negate either clause, the bag of words alone leaves some reviews ambiguous; word order
    resolves them. A fraction `label_noise` of labels is replaced by another class.
    """
    rng = np.random.default_rng(seed)

    def pick(options: Sequence[str]) -> str:
        return options[rng.integers(len(options))]

    rows = []
    for _ in range(n_samples):
        label = int(rng.integers(3))  # index into DEMO_CLASSES
        count = int(rng.integers(1, 4))
        if label == 1:  # mixed: at least one clause of each sign
            count = max(count, 2)
            signs = rng.permutation([1, 0, *rng.integers(2, size=count - 2)])
        else:
            signs = np.full(count, label // 2)
        aspects = rng.permutation(len(ASPECTS))[:count]
        clauses = []
        for aspect, positive in zip(aspects, signs, strict=True):
            negated = rng.random() < 0.35
            words = POSITIVE if bool(positive) != negated else NEGATIVE
            verb, intensity = pick(VERBS), pick(INTENSIFIERS)
            clause = f"the {ASPECTS[aspect]} {verb} {'not ' if negated else ''}{intensity}"
            clauses.append(clause + pick(words))
        text = pick(OPENERS) + clauses[0]
        for clause in clauses[1:]:
            text += pick(JOINERS) + clause
        text = text[0].upper() + text[1:] + "." + pick(ASIDES)
        if rng.random() < label_noise:
            label = (label + int(rng.integers(1, 3))) % 3
        rows.append((text, DEMO_CLASSES[label]))
    return pd.DataFrame(rows, columns=["text", "label"])


def load_text_demo(
    seed: int, n_samples: int = 3000, label_noise: float = 0.05, **options: Any
) -> DataBundle:
    """The generated reviews of `demo_reviews`, through the same path as a CSV file."""
    frame = demo_reviews(seed, n_samples=n_samples, label_noise=label_noise)
    return text_bundle(frame, seed=seed, name="text_demo", source="data=text_demo", **options)
