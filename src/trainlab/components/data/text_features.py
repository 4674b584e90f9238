"""Text to one vector per text: TF-IDF or bag-of-words counts, fitted on the training split.

`data.representation=tfidf` (or `bow`) turns each text into a row of `max_features`
numbers with scikit-learn's `TfidfVectorizer` (or `CountVectorizer`): the vocabulary (the
most frequent words or n-grams of the training texts) and, for TF-IDF, each term's inverse
document frequency are learned from the training split only. The rows feed a model that
takes "features" (the MLP).

The rows are stored dense (float32), so the splits take texts x features x 4 bytes;
`DENSE_LIMIT_BYTES` is where that is refused with a line saying to lower
`data.max_features`. The fitted vectorizer is saved as data (`text_vectorizer.json`: the
terms in column order and the settings and idf weights through `state.encode`), never as a
pickle, so a prediction rebuilds the same vectors bit for bit.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from trainlab.components.data.files import write_text_atomic
from trainlab.components.data.state import UnsafeState, decode, encode
from trainlab.errors import TrainlabError

REPRESENTATIONS = ("tokens", "tfidf", "bow")
VECTORIZER_FILE = "text_vectorizer.json"
FORMAT = "trainlab-text-vectorizer-1"
# Dense float32 rows of every split past this size are refused: lower data.max_features.
DENSE_LIMIT_BYTES = 4 * 1024**3
# Attributes a fitted vectorizer holds that are not part of its transform: the id() of its
# stop-word list (differs every run) and the vocabulary, stored compactly as `terms`.
NOT_STORED = ("_stop_words_id", "vocabulary_")


class TextVectorizer:
    """A fitted TF-IDF or count vectorizer: texts in, (N, features) float32 rows out."""

    def __init__(self, representation: str, vectorizer: CountVectorizer) -> None:
        self.representation = representation
        self.vectorizer = vectorizer

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        *,
        representation: str = "tfidf",
        max_features: int | None = 20000,
        ngram_range: Sequence[int] = (1, 1),
        min_df: int = 1,
        sublinear_tf: bool = True,
        lowercase: bool = True,
        source: str = "the training texts",
    ) -> TextVectorizer:
        """Learn the vocabulary (and idf weights) from the training texts."""
        options: dict[str, Any] = {
            "max_features": max_features,
            "ngram_range": (int(ngram_range[0]), int(ngram_range[1])),
            "min_df": min_df,
            "lowercase": lowercase,
        }
        if representation == "tfidf":
            vectorizer: CountVectorizer = TfidfVectorizer(sublinear_tf=sublinear_tf, **options)
        elif representation == "bow":
            vectorizer = CountVectorizer(**options)
        else:
            raise TrainlabError(
                f"data.representation={representation!r} is unknown; choose one of: "
                f"{', '.join(REPRESENTATIONS)}"
            )
        try:
            vectorizer.fit(texts)
        except ValueError as ex:
            if "empty vocabulary" in str(ex):
                raise TrainlabError(
                    f"data.representation={representation} found no words in {source} (words "
                    "are runs of 2+ letters or digits): check data.text_column"
                ) from None
            if "min_df" in str(ex) or "max_df" in str(ex):
                raise TrainlabError(
                    f"data.min_df={min_df} leaves no term of {source} ({len(texts)} training "
                    "texts): lower data.min_df"
                ) from None
            raise
        return cls(representation, vectorizer)

    @property
    def num_features(self) -> int:
        return len(self.vectorizer.vocabulary_)

    @property
    def terms(self) -> list[str]:
        """The words or n-grams, in the order of the model's inputs."""
        return [str(term) for term in self.vectorizer.get_feature_names_out()]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        # Weighted and normalised in float64 as scikit-learn does by default, then stored
        # as float32 (the model's dtype).
        rows = self.vectorizer.transform(list(texts))
        return torch.from_numpy(rows.astype(np.float32).toarray())

    def check_size(self, count: int) -> None:
        """Refuse `count` texts whose dense rows would not comfortably fit in memory."""
        size = count * self.num_features * 4
        if size > DENSE_LIMIT_BYTES:
            fits = max(DENSE_LIMIT_BYTES // (4 * count), 1)
            raise TrainlabError(
                f"data.representation={self.representation}: {count} texts x "
                f"{self.num_features} terms take {size / 1024**3:.1f} GiB as dense float32 "
                f"rows (the limit is {DENSE_LIMIT_BYTES / 1024**3:.0f} GiB): lower "
                f"data.max_features, e.g. data.max_features={fits}"
            )

    def describe(self, count: int) -> str:
        settings = self.vectorizer
        grams = "-".join(map(str, settings.ngram_range))
        return (
            f"text: {self.representation} features of {grams}-grams, {self.num_features} terms "
            f"(min_df={settings.min_df}); {count} texts take "
            f"{count * self.num_features * 4 / 1024**2:.1f} MiB as float32 rows"
        )

    def save(self, directory: str | Path) -> Path:
        """Write `text_vectorizer.json`: the terms in column order, the fitted settings and
        (TF-IDF) the idf weights, as data."""
        state = copy.copy(self.vectorizer)
        for name in NOT_STORED:
            state.__dict__.pop(name, None)
        payload = {
            "format": FORMAT,
            "scikit_learn": sklearn.__version__,
            "representation": self.representation,
            "terms": self.terms,
            "vectorizer": encode(state),
        }
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return write_text_atomic(Path(directory) / VECTORIZER_FILE, text)

    @classmethod
    def load(cls, directory: str | Path) -> TextVectorizer:
        """The vectorizer `save(directory)` wrote; nothing in the file is executed."""
        path = Path(directory) / VECTORIZER_FILE
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            return cls._from_payload(payload)
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as ex:
            reason = str(ex).splitlines()[0][:120] if str(ex) else type(ex).__name__
            raise TrainlabError(
                f"cannot read the text vectorizer {path} ({reason}); it was not loaded: "
                "retrain the run to write it again"
            ) from None

    @classmethod
    def _from_payload(cls, payload: Any) -> TextVectorizer:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise UnsafeState(f"no '{FORMAT}' marker")
        representation, terms = payload["representation"], payload["terms"]
        expected = {"tfidf": TfidfVectorizer, "bow": CountVectorizer}.get(representation)
        vectorizer = decode(payload["vectorizer"])
        if expected is None or type(vectorizer) is not expected:
            raise UnsafeState(f"a {type(vectorizer).__name__} for {str(representation)[:20]!r}")
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise UnsafeState("terms that are not texts")
        if len(set(terms)) != len(terms):
            raise UnsafeState("repeated terms")
        # Only the built-in analyzer, tokenizer and preprocessor: names, never functions.
        for name in ("analyzer", "tokenizer", "preprocessor", "stop_words", "vocabulary"):
            value = vectorizer.__dict__.get(name)
            if value is not None and not isinstance(value, str):
                raise UnsafeState(f"{name} of type {type(value).__name__}")
        vectorizer.vocabulary_ = {term: np.int64(i) for i, term in enumerate(terms)}
        idf = getattr(vectorizer.__dict__.get("_tfidf"), "idf_", None)
        if representation == "tfidf" and (idf is None or len(idf) != len(terms)):
            raise UnsafeState(f"idf weights for {len(terms)} terms")
        return cls(representation, vectorizer)
