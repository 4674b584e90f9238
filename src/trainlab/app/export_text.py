"""The tokenizer of a text run as a `tokenizer.json` of the `tokenizers` package, beside
the exported model, giving the token ids the model takes.

BPE and WordPiece runs already keep one; word and char vocabularies are written as a
`WordLevel` tokenizer with the same splitting (letters runs, or every character) and
lowercasing. Either way padding and truncation to the run's sequence length are switched
on, so `Tokenizer.from_file("tokenizer.json").encode_batch(texts)` gives the (N, length)
ids directly. The file is checked on texts made from the test split's tokens: its ids
must equal trainlab's own encoding of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from trainlab.components.data.text import (
    PAD,
    PADDING_IDX,
    SUBWORD_FILE,
    UNK,
    UNKNOWN_IDX,
    WORD,
    TextPreprocessor,
)
from trainlab.errors import TrainlabError

USAGE = (
    "from tokenizers import Tokenizer; ids = [e.ids for e in "
    "Tokenizer.from_file('tokenizer.json').encode_batch(texts)] -> int64 array (N, {length}) "
    "for the model's 'inputs'; trainlab gives an empty text the single id {unk} ([UNK])"
)
EXTRA_TEXTS = ("Hello, World! 123 don't stop.", "  spaces\tand\nlines  ", "x2y_z", "CAPITALS")


def as_tokenizer(preprocessor: TextPreprocessor, run_dir: Path) -> Tokenizer:
    """The run's tokenizer in the `tokenizers` package's form, padded to the run's length."""
    fitted = preprocessor.tokenizer
    if preprocessor.kind in ("bpe", "wordpiece"):
        tokenizer = Tokenizer.from_file(str(run_dir / SUBWORD_FILE))
    else:
        tokenizer = Tokenizer(models.WordLevel(vocab=dict(fitted.ids), unk_token=UNK))
        if fitted.lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        if preprocessor.kind == "word":  # the matches of trainlab's WORD pattern are the words
            split = pre_tokenizers.Split(Regex(WORD.pattern), behavior="removed", invert=True)
        else:  # every character, line breaks included
            split = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tokenizer.pre_tokenizer = split
    tokenizer.enable_padding(length=preprocessor.length, pad_id=PADDING_IDX, pad_token=PAD)
    tokenizer.enable_truncation(max_length=preprocessor.length)
    return tokenizer


def texts_from(preprocessor: TextPreprocessor, ids: torch.Tensor) -> list[str]:
    """Texts made of the tokens of `ids` (the test split), to check the tokenizer on."""
    fitted = preprocessor.tokenizer
    texts = []
    for row in ids.tolist():
        kept = [i for i in row if i not in (PADDING_IDX, UNKNOWN_IDX)]
        if preprocessor.kind in ("bpe", "wordpiece"):
            texts.append(fitted.decode(kept))
        else:
            joiner = " " if preprocessor.kind == "word" else ""
            texts.append(joiner.join(fitted.tokens[i] for i in kept))
    return [text for text in [*texts, *EXTRA_TEXTS] if text.strip()]


def checked_tokenizer(
    run_dir: Path, preprocessor: TextPreprocessor, ids: torch.Tensor
) -> tuple[str, dict[str, Any]]:
    """The text of `tokenizer.json`, checked, and the manifest's note on it."""
    tokenizer = as_tokenizer(preprocessor, run_dir)
    texts = texts_from(preprocessor, ids.cpu())
    ours = preprocessor.encode(texts).tolist()
    theirs = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
    differ = [text for text, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    if differ:
        raise TrainlabError(
            f"run={run_dir}: tokenizer.json encodes {len(differ)} of {len(texts)} check texts "
            f"differently from the run's tokenizer (e.g. {differ[0][:60]!r}); the model was "
            "exported, but its tokenizer was not: report this with the run's tokenizer settings"
        )
    return tokenizer.to_str(), {
        "file": SUBWORD_FILE,
        "kind": preprocessor.kind,
        "length": preprocessor.length,
        "padding_id": PADDING_IDX,
        "unknown_id": UNKNOWN_IDX,
        "checked_texts": len(texts),
        "usage": USAGE.format(length=preprocessor.length, unk=UNKNOWN_IDX),
    }
