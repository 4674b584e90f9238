"""Text data: tokenizers, vocabularies from the training split, padding, saving, the demo task."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config, read_metrics, train_in_process
from torch import nn

from trainlab.app.config import validate
from trainlab.components.data.datasets import split_rows
from trainlab.components.data.text import (
    CharTokenizer,
    SubwordTokenizer,
    TextPreprocessor,
    WordTokenizer,
)
from trainlab.components.data.text_datasets import (
    DEMO_CLASSES,
    demo_reviews,
    load_text,
    load_text_demo,
    text_bundle,
)
from trainlab.errors import ConfigError, TrainlabError, one_line


class BagOfEmbeddings(nn.Module):
    """Throwaway token model for these tests: mean of the token embeddings -> MLP.

    `nn.EmbeddingBag` leaves the padding id out of the mean. Word order is invisible to it.
    """

    input_kinds = ("tokens",)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        vocab_size: int,
        padding_idx: int,
        embedding_dim: int = 32,
        hidden_size: int = 64,
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(
            vocab_size, embedding_dim, mode="mean", padding_idx=padding_idx
        )
        self.head = nn.Sequential(
            nn.Linear(embedding_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_outputs)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(tokens))


# Replace the default model (MLP) by the one above in a composed config.
BAG_OF_EMBEDDINGS = ("~model", f"+model._target_={__name__}.BagOfEmbeddings")


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, World!", ["hello", "world"]),
        ("don't STOP", ["don", "t", "stop"]),
        ("e-mail 42times", ["e", "mail", "times"]),
        ("snake_case\tand\nlines", ["snake", "case", "and", "lines"]),
        ("Crème BRÛLÉE", ["crème", "brûlée"]),
        ("ÀB3cd", ["àb", "cd"]),
        ("  12 ... !", []),
        ("", []),
    ],
)
def test_word_tokenizer_lowercases_and_splits_on_non_letters(text, tokens) -> None:
    assert WordTokenizer().split(text) == tokens


def test_word_tokenizer_keeps_case_when_asked() -> None:
    assert WordTokenizer(lowercase=False).split("Hello, World") == ["Hello", "World"]


def test_vocabulary_keeps_the_most_frequent_tokens_ties_by_token() -> None:
    texts = ["b a c", "a b", "a c d"]  # a: 3, b: 2, c: 2, d: 1
    assert WordTokenizer().fit(texts, vocab_size=4).tokens == ["[PAD]", "[UNK]", "a", "b"]
    assert WordTokenizer().fit(texts, vocab_size=5).tokens == ["[PAD]", "[UNK]", "a", "b", "c"]
    assert WordTokenizer().fit(texts, vocab_size=100).tokens[2:] == ["a", "b", "c", "d"]
    assert WordTokenizer().fit(texts, vocab_size=100, min_freq=2).tokens[2:] == ["a", "b", "c"]
    assert WordTokenizer().fit(texts, vocab_size=100, min_freq=3).tokens[2:] == ["a"]
    tokenizer = WordTokenizer().fit(texts, vocab_size=4)
    assert tokenizer.vocab_size == 4
    assert tokenizer.encode(["A c d e b"]) == [[2, 1, 1, 1, 3]]


def test_padding_is_right_aligned_with_zero_and_long_texts_are_truncated() -> None:
    texts = ["a b c", "a", ""]  # ids: a=2, b=3, c=4
    full = TextPreprocessor.fit(texts, max_length=10)
    assert full.length == 3  # the longest training text, as max_length is longer
    inputs = full.encode(texts)
    assert inputs.dtype == torch.long
    assert inputs.tolist() == [[2, 3, 4], [2, 0, 0], [1, 0, 0]]  # empty text: one [UNK]
    assert (inputs != 0).sum(dim=1).tolist() == [3, 1, 1]
    assert full.encode(["c b a a a"]).tolist() == [[4, 3, 2]]

    short = TextPreprocessor.fit(texts, max_length=2)
    assert short.length == 2
    assert short.encode(texts).tolist() == [[2, 3], [2, 0], [1, 0]]


def test_char_tokenizer_counts_characters_of_the_training_texts() -> None:
    tokenizer = CharTokenizer().fit(["abba", "Cab"], vocab_size=100)  # a: 3, b: 3, c: 1
    assert tokenizer.tokens == ["[PAD]", "[UNK]", "a", "b", "c"]
    assert tokenizer.encode(["Cab d"]) == [[4, 2, 3, 1, 1]]
    cased = CharTokenizer(lowercase=False).fit(["abba", "Cab"], vocab_size=100)
    assert cased.tokens == ["[PAD]", "[UNK]", "a", "b", "C"]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_subword_tokenizers_train_to_the_requested_size_and_round_trip(kind) -> None:
    texts = list(demo_reviews(seed=0, n_samples=500).text)
    tokenizer = SubwordTokenizer(kind).fit(texts, vocab_size=150)
    assert tokenizer.vocab_size == 150
    vocab = tokenizer.tokenizer.get_vocab()
    assert vocab["[PAD]"] == 0 and vocab["[UNK]"] == 1
    assert max(vocab.values()) == 149

    (ids,) = tokenizer.encode(["The battery is NOT good but the price was great"])
    assert 1 not in ids and 0 not in ids
    assert tokenizer.decode(ids) == "the battery is not good but the price was great"
    (battery,) = tokenizer.encode(["battery"])
    assert len(battery) == 1  # a frequent word is one token
    (unseen,) = tokenizer.encode(["zzz"])  # no "z" in the training texts
    assert set(unseen) == {1}


@pytest.mark.parametrize("kind", ["word", "char", "bpe", "wordpiece"])
def test_vocabulary_comes_from_the_training_split_only(kind) -> None:
    frame = demo_reviews(seed=1, n_samples=300)
    _, targets = np.unique(frame.label, return_inverse=True)  # class ids as the loader sorts
    _, val, test = split_rows(targets, val_fraction=0.15, test_fraction=0.15, seed=5, stratify=True)
    # A word (and letter) seen only outside the training split.
    held_out = np.concatenate([val, test])
    frame.loc[held_out, "text"] = "zebra " + frame.loc[held_out, "text"]

    data = text_bundle(frame, seed=5, name="t", source="t", tokenizer=kind, vocab_size=500)
    assert (data.train.inputs != 1).all()  # nothing unknown in the training split
    for split in (data.val, data.test):
        assert (split.inputs[:, 0] == 1).all()  # "zebra" (or its "z") is unknown
    assert data.info.input_kind == "tokens"
    assert data.info.vocab_size == data.preprocessor.vocab_size
    assert data.info.padding_idx == 0
    assert int(data.train.inputs.max()) < data.info.vocab_size
    assert data.info.input_shape == (data.preprocessor.length,)


@pytest.mark.parametrize("kind", ["word", "char", "bpe", "wordpiece"])
def test_saved_preprocessor_reloads_to_identical_ids(tmp_path, kind) -> None:
    frame = demo_reviews(seed=2, n_samples=300)
    fitted = TextPreprocessor.fit(list(frame.text[:200]), tokenizer=kind, vocab_size=100)
    path = fitted.save(tmp_path)
    settings = json.loads(path.read_text())
    assert settings["tokenizer"] == kind and settings["length"] == fitted.length
    if kind in ("word", "char"):
        assert settings["vocab"][:2] == ["[PAD]", "[UNK]"]
        assert not (tmp_path / "tokenizer.json").exists()
    else:
        assert (tmp_path / "tokenizer.json").is_file()

    loaded = TextPreprocessor.load(tmp_path)
    new_texts = [*frame.text[200:], "Zebras are NOT in the training set!", ""]
    assert torch.equal(loaded.encode(new_texts), fitted.encode(new_texts))
    assert loaded.vocab_size == fitted.vocab_size


def test_demo_is_deterministic_for_a_seed_and_balanced() -> None:
    first, again, other = demo_reviews(7), demo_reviews(7), demo_reviews(8)
    assert first.equals(again)
    assert not first.equals(other)
    assert len(first) == 3000 and list(first.columns) == ["text", "label"]
    shares = first.label.value_counts(normalize=True)
    assert set(shares.index) == set(DEMO_CLASSES)
    assert shares.min() > 0.30 and shares.max() < 0.37

    data, repeat = load_text_demo(seed=3, n_samples=400), load_text_demo(seed=3, n_samples=400)
    assert torch.equal(data.train.inputs, repeat.train.inputs)
    assert data.info.class_names == ["mixed", "negative", "positive"]
    assert data.info.task == "multiclass"


def test_no_single_word_decides_the_demo() -> None:
    """Predicting from whether one word is present (best class each way) stays far from 1."""
    frame = demo_reviews(seed=0)
    tokenizer = WordTokenizer()
    present = pd.DataFrame(
        [dict.fromkeys(tokenizer.split(text), True) for text in frame.text]
    ).fillna(False)
    best = 0.0
    for word in present.columns:
        has = present[word].to_numpy(dtype=bool)
        hits = sum(frame.label[side].value_counts().max() for side in (has, ~has) if side.any())
        best = max(best, hits / len(frame))
    largest = frame.label.value_counts(normalize=True).max()
    assert largest < best < 0.45  # about 0.38 against 0.35 for the largest class alone


def test_bag_of_embeddings_learns_the_demo_well_above_chance(run_experiment) -> None:
    _, run_dir = run_experiment(
        "data=text_demo",
        *BAG_OF_EMBEDDINGS,
        "data.batch_size=128",
        "optim.lr=0.02",
        "trainer.max_epochs=8",
    )
    metrics = read_metrics(run_dir)
    assert metrics["task"] == "multiclass"
    # 0.818 measured; chance is 1/3. Word order (which clause "not" negates) is invisible
    # to a bag of words, and 5% of the labels are noise, so it stays well below 1.
    assert 0.75 <= metrics["test"]["test/acc"] < 0.9
    # The fitted vocabulary lies in the run folder, ready for a later prediction.
    saved = TextPreprocessor.load(run_dir)
    assert saved.kind == "word" and saved.vocab_size == 69


def test_csv_file_runs_with_a_trained_tokenizer(run_experiment, text_csv) -> None:
    _, run_dir = run_experiment(
        "data=text",
        f"data.path={text_csv}",
        "data.tokenizer=wordpiece",
        "data.vocab_size=200",
        *BAG_OF_EMBEDDINGS,
        "trainer.max_epochs=2",
    )
    assert (run_dir / "tokenizer.json").is_file()
    saved = TextPreprocessor.load(run_dir)
    assert saved.kind == "wordpiece" and saved.vocab_size == 200
    assert read_metrics(run_dir)["epochs"] == 2


def test_numeric_labels_sort_as_numbers_and_two_classes_are_binary(tmp_path) -> None:
    path = tmp_path / "numbers.csv"
    rows = [("good thing", "10"), ("bad thing", "2"), ("fine thing", "1")] * 20
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    data = load_text(seed=0, path=str(path))
    assert data.info.class_names == ["1", "2", "10"]
    assert data.info.task == "multiclass"

    two = [row for row in rows if row[1] != "1"]
    pd.DataFrame(two, columns=["review", "stars"]).to_csv(path, index=False)
    binary = load_text(seed=0, path=str(path), text_column="review", label_column="stars")
    assert binary.info.task == "binary" and binary.info.num_classes == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty; it needs a header line (e.g. text,label) and rows"),
        ("text,label\n", "has a header (text, label) but no rows"),
        ("text,label\na,x\nb,x\nc,x\n", "column 'label' of data.path=DATA holds a single class"),
        ("text,label\na,x\nb,\nc,y\n", "1 rows of data.path=DATA have no label in column 'label'"),
        ("review,stars\na,1\n", "data.text_column='text' is not a column of data.path=DATA; "),
    ],
)
def test_bad_files_are_refused_in_one_line(tmp_path, content, message) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(TrainlabError) as raised:
        load_text(seed=0, path=str(path))
    assert message.replace("DATA", str(path)) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_text_file_needs_its_path_and_a_known_tokenizer() -> None:
    with pytest.raises(Exception) as raised:
        validate(compose_config("data=text"))
    assert (
        one_line(raised.value)
        == "data.path is required (its value is ???): set it, e.g. data.path=..."
    )
    with pytest.raises(ConfigError, match=r"data.tokenizer='bpee' is not allowed \(did you"):
        validate(compose_config("data=text_demo", "data.tokenizer=bpee"))
    with pytest.raises(ConfigError, match=r"data.vocab_size=2 is out of range: it must be >= 3"):
        validate(compose_config("data=text_demo", "data.vocab_size=2"))
    with pytest.raises(ConfigError, match=r"test_fraction = 0.95 leaves too little to train"):
        validate(compose_config("data=text_demo", "data.val_fraction=0.8"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.path=missing.csv"],
            "error: data.path=missing.csv: file not found (looked in {cwd}/missing.csv); "
            "point data.path at a CSV file with a text column and a label column",
        ),
        (
            ["data.path=reviews.csv", "data.text_column=body"],
            "error: data.text_column='body' is not a column of data.path=reviews.csv; "
            "columns: text, label",
        ),
    ],
)
def test_the_command_reports_a_missing_file_or_column_in_one_line(
    tmp_path, text_csv, overrides, message
) -> None:
    (tmp_path / "reviews.csv").write_bytes(text_csv.read_bytes())
    result = train_in_process("data=text", *overrides, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == message.format(cwd=tmp_path.resolve())
    assert not list((tmp_path / "outputs" / "runs").glob("*"))  # no run folder left behind
