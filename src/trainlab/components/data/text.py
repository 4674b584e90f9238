"""Text to token ids: tokenizers fitted on the training split, and padding to one length.

Every tokenizer reserves id 0 for padding (`[PAD]`) and id 1 for unknown tokens
(`[UNK]`), so the id tensors a model sees are the same whatever the tokenizer:

- `word`: lowercase (optional), then the runs of letters (`[^\\W\\d_]+`); digits,
  punctuation and spaces separate words. The vocabulary is the most frequent words.
- `char`: every character (spaces included) is a token; the most frequent ones are kept.
- `bpe`, `wordpiece`: subword vocabularies trained with HuggingFace `tokenizers`
  (lowercase normaliser, whitespace pre-tokenizer), saved as its `tokenizer.json`.

`TextPreprocessor` holds a fitted tokenizer and the sequence length `T`; it turns texts
into a (N, T) `torch.long` tensor, right-padded with 0, and saves itself to a run folder
so a later prediction encodes new text exactly as training did.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer as HuggingFaceTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from trainlab.components.data.files import write_atomic, write_text_atomic
from trainlab.errors import TrainlabError

PAD, UNK = "[PAD]", "[UNK]"
PADDING_IDX, UNKNOWN_IDX = 0, 1
TOKENIZERS = ("word", "char", "bpe", "wordpiece")
# The settings file a saved preprocessor writes (and the tokenizers package's own file).
SETTINGS_FILE = "text_preprocessor.json"
SUBWORD_FILE = "tokenizer.json"
FORMAT = "trainlab-text-1"

WORD = re.compile(r"[^\W\d_]+")


class VocabularyTokenizer:
    """Splits text into tokens and maps each to its id in a vocabulary of frequent tokens.

    `fit` keeps the `vocab_size - 2` most frequent training tokens seen at least
    `min_freq` times (ties broken alphabetically, so the vocabulary is deterministic);
    every other token maps to the unknown id.
    """

    kind = ""

    def __init__(self, lowercase: bool = True, tokens: Sequence[str] | None = None) -> None:
        self.lowercase = lowercase
        self.tokens: list[str] = list(tokens) if tokens is not None else []
        self.ids = {token: index for index, token in enumerate(self.tokens)}

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def fit(self, texts: Sequence[str], vocab_size: int, min_freq: int = 1) -> VocabularyTokenizer:
        counts = Counter(token for text in texts for token in self.split(text))
        ranked = sorted(
            (token for token, count in counts.items() if count >= min_freq),
            key=lambda token: (-counts[token], token),
        )
        self.tokens = [PAD, UNK, *ranked[: max(vocab_size - 2, 0)]]
        self.ids = {token: index for index, token in enumerate(self.tokens)}
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.ids
        return [[ids.get(token, UNKNOWN_IDX) for token in self.split(text)] for text in texts]

    def save(self, directory: Path) -> dict[str, Any]:
        """The settings to store: the vocabulary is a JSON list in the settings file."""
        return {"lowercase": self.lowercase, "vocab": self.tokens}


class WordTokenizer(VocabularyTokenizer):
    kind = "word"

    def split(self, text: str) -> list[str]:
        return WORD.findall(text.lower() if self.lowercase else text)


class CharTokenizer(VocabularyTokenizer):
    kind = "char"

    def split(self, text: str) -> list[str]:
        return list(text.lower() if self.lowercase else text)


class SubwordTokenizer:
    """A BPE or WordPiece vocabulary trained by the `tokenizers` package (no downloads).

    Its `[PAD]` and `[UNK]` are trained as the first two special tokens, so they get the
    ids 0 and 1. Words are split on whitespace and punctuation before the subword model
    runs; BPE marks word ends (`</w>`) and WordPiece continuations (`##`) so decoding
    restores the spaces.
    """

    def __init__(self, kind: str, lowercase: bool = True, tokenizer: Any = None) -> None:
        self.kind = kind
        self.lowercase = lowercase
        self.tokenizer = tokenizer

    def fit(self, texts: Sequence[str], vocab_size: int, min_freq: int = 1) -> SubwordTokenizer:
        special = {"special_tokens": [PAD, UNK], "vocab_size": vocab_size}
        if self.kind == "bpe":
            tokenizer = HuggingFaceTokenizer(models.BPE(unk_token=UNK, end_of_word_suffix="</w>"))
            trainer = trainers.BpeTrainer(
                min_frequency=min_freq, end_of_word_suffix="</w>", show_progress=False, **special
            )
            tokenizer.decoder = decoders.BPEDecoder(suffix="</w>")
        else:
            tokenizer = HuggingFaceTokenizer(models.WordPiece(unk_token=UNK))
            trainer = trainers.WordPieceTrainer(
                min_frequency=min_freq, show_progress=False, **special
            )
            tokenizer.decoder = decoders.WordPiece()
        if self.lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
        assert tokenizer.token_to_id(PAD) == PADDING_IDX and tokenizer.token_to_id(UNK) == 1
        self.tokenizer = tokenizer
        return self

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i != PADDING_IDX])

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the package's own `tokenizer.json`; return the settings that point at it."""
        write_atomic(directory / SUBWORD_FILE, lambda tmp: self.tokenizer.save(str(tmp)))
        return {"lowercase": self.lowercase, "tokenizer_file": SUBWORD_FILE}


AnyTokenizer = VocabularyTokenizer | SubwordTokenizer


def make_tokenizer(kind: str, lowercase: bool = True) -> AnyTokenizer:
    if kind == "word":
        return WordTokenizer(lowercase)
    if kind == "char":
        return CharTokenizer(lowercase)
    if kind in ("bpe", "wordpiece"):
        return SubwordTokenizer(kind, lowercase)
    raise TrainlabError(
        f"data.tokenizer={kind!r} is unknown; choose one of: {', '.join(TOKENIZERS)}"
    )


def pad(sequences: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """Right-pad (or truncate) id lists to `length`; an empty list becomes one unknown id."""
    ids = np.full((len(sequences), length), PADDING_IDX, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        sequence = sequence[:length] if sequence else [UNKNOWN_IDX]
        ids[row, : len(sequence)] = sequence
    return torch.from_numpy(ids)


class TextPreprocessor:
    """A fitted tokenizer plus the sequence length: texts in, (N, length) token ids out."""

    def __init__(self, tokenizer: AnyTokenizer, length: int) -> None:
        self.tokenizer = tokenizer
        self.length = length

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        *,
        tokenizer: str = "word",
        vocab_size: int = 10000,
        min_freq: int = 1,
        max_length: int = 128,
        lowercase: bool = True,
    ) -> TextPreprocessor:
        """Fit on the training texts; the length is `max_length` or the longest text if shorter."""
        fitted = make_tokenizer(tokenizer, lowercase).fit(texts, vocab_size, min_freq)
        longest = max((len(ids) for ids in fitted.encode(texts)), default=1)
        return cls(fitted, max(1, min(max_length, longest)))

    @property
    def kind(self) -> str:
        return self.tokenizer.kind

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return pad(self.tokenizer.encode(texts), self.length)

    def save(self, directory: str | Path) -> Path:
        """Write `text_preprocessor.json` (plus `tokenizer.json` for bpe / wordpiece)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        settings = {
            "format": FORMAT,
            "tokenizer": self.kind,
            "length": self.length,
            "padding_idx": PADDING_IDX,
            "unknown_idx": UNKNOWN_IDX,
            **self.tokenizer.save(directory),
        }
        return write_text_atomic(
            directory / SETTINGS_FILE, json.dumps(settings, ensure_ascii=False, indent=1)
        )

    @classmethod
    def load(cls, directory: str | Path) -> TextPreprocessor:
        """The preprocessor `save(directory)` wrote, e.g. into a run folder."""
        path = Path(directory) / SETTINGS_FILE
        try:
            settings = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as ex:
            raise TrainlabError(f"cannot read the text preprocessor {path}: {ex}") from None
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise TrainlabError(f"{path} is not a trainlab text preprocessor ({FORMAT})")
        kind, lowercase, length = (settings.get(k) for k in ("tokenizer", "lowercase", "length"))
        vocab = settings.get("vocab")
        if (
            kind not in TOKENIZERS
            or not isinstance(lowercase, bool)
            or not isinstance(length, int)
            or length < 1
            or (kind in ("word", "char") and not _texts(vocab))
            or (kind not in ("word", "char") and settings.get("tokenizer_file") != SUBWORD_FILE)
        ):
            raise TrainlabError(
                f"{path} holds settings of unexpected types; it was not loaded: retrain the run"
            )
        if kind == "word":
            tokenizer: AnyTokenizer = WordTokenizer(lowercase, vocab)
        elif kind == "char":
            tokenizer = CharTokenizer(lowercase, vocab)
        else:  # the tokenizers package reads its JSON file as data (Rust), nothing runs
            try:
                trained = HuggingFaceTokenizer.from_file(str(path.parent / SUBWORD_FILE))
            except Exception as ex:
                reason = str(ex).splitlines()[0][:120] if str(ex) else type(ex).__name__
                raise TrainlabError(f"cannot read {path.parent / SUBWORD_FILE}: {reason}") from None
            tokenizer = SubwordTokenizer(kind, lowercase, trained)
        return cls(tokenizer, length)


def _texts(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(value, str) for value in values)
