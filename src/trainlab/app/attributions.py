"""Attributions of a model's outputs to its inputs: permutation importance, and Captum's
integrated gradients (tables), saliency (images) and layer integrated gradients on the
embedding (tokens). Pure computations on tensors; app/explain.py writes the results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

IG_STEPS = 32  # integration steps of integrated gradients (Captum's default is 50)


def attribution_target(outputs: torch.Tensor, targets: torch.Tensor, task: str) -> Any:
    """The output each row's attribution explains: the true class (multiclass, binary with
    two outputs), the one logit (binary with one output), the first target (regression)."""
    if task == "regression" or outputs.shape[-1] == 1:
        return 0
    return targets.long()


def permutation_importance(
    score: Callable[[torch.Tensor], float],
    inputs: torch.Tensor,
    groups: list[list[int]],
    higher_is_better: bool,
    repeats: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over `repeats` of how much `score` worsens when the
    input columns of each group are shuffled together across rows (scikit-learn's
    definition; a group is a raw column's one-hot or date parts)."""
    generator = torch.Generator().manual_seed(seed)
    base = score(inputs)
    drops = np.zeros((len(groups), repeats))
    for repeat in range(repeats):
        for index, columns in enumerate(groups):
            order = torch.randperm(len(inputs), generator=generator)
            shuffled = inputs.clone()
            shuffled[:, columns] = inputs[order][:, columns]
            change = base - score(shuffled)
            drops[index, repeat] = change if higher_is_better else -change
    return drops.mean(axis=1), drops.std(axis=1)


def integrated_gradients(
    model: nn.Module, inputs: torch.Tensor, target: Any, baseline: torch.Tensor | None = None
) -> torch.Tensor:
    """Captum's integrated gradients per input value, from `baseline` (default zeros: the
    training mean of standardised features)."""
    from captum.attr import IntegratedGradients

    baselines = torch.zeros_like(inputs) if baseline is None else baseline
    with torch.enable_grad():
        return (
            IntegratedGradients(model)
            .attribute(inputs, baselines=baselines, target=target, n_steps=IG_STEPS)
            .detach()
        )


def saliency(model: nn.Module, inputs: torch.Tensor, target: Any) -> torch.Tensor:
    """Captum's saliency: the absolute gradient of the target output for each input value."""
    from captum.attr import Saliency

    with torch.enable_grad():
        return Saliency(model).attribute(inputs, target=target, abs=True).detach()


def token_attributions(
    model: nn.Module, embedding: nn.Module, tokens: torch.Tensor, target: Any, padding_idx: int
) -> torch.Tensor:
    """Layer integrated gradients on `embedding` (Captum), summed over the embedding's
    dimensions: one value per token, from a baseline of padding."""
    from captum.attr import LayerIntegratedGradients

    baseline = torch.full_like(tokens, padding_idx)
    with torch.enable_grad():
        values = LayerIntegratedGradients(model, embedding).attribute(
            tokens, baselines=baseline, target=target, n_steps=IG_STEPS
        )
    return values.sum(dim=-1).detach()


def embedding_layer(model: nn.Module) -> nn.Module | None:
    """The model's first `nn.Embedding` (the one the token ids go through)."""
    return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)


def input_names(preprocessor: Any, width: int) -> tuple[list[str], list[str]]:
    """The model's input columns, named after the data (`col=value` for a one-hot column),
    and the raw column each comes from. Without a fitted table transform: x0, x1, ..."""
    transformer = getattr(preprocessor, "transformer", None)
    if transformer is None or not hasattr(transformer, "transformers_"):
        names = [f"x{i}" for i in range(width)]
        return names, list(names)
    one_hot: dict[str, tuple[str, str]] = {}
    categorical = list(getattr(preprocessor, "categorical", []))
    if categorical:
        encoder = transformer.named_transformers_["categorical"].named_steps["one_hot"]
        for column, categories in zip(categorical, encoder.categories_, strict=True):
            for category in categories:
                one_hot[f"categorical__{column}_{category}"] = (f"{column}={category}", column)
    from trainlab.components.data.dates import DATE_PARTS, TIME_PARTS

    date_of = {
        f"{column}_{part}": column
        for column in getattr(preprocessor, "dates", {})
        for part in DATE_PARTS + TIME_PARTS
    }
    names, raw = [], []
    for full in preprocessor.feature_names:
        if full in one_hot:
            name, column = one_hot[full]
        else:
            name = full.split("__", 1)[-1]
            bare = name.removeprefix("missingindicator_")
            column = date_of.get(bare, bare)
        names.append(name)
        raw.append(column)
    if len(names) != width:  # a transform this code does not know: plain positions
        names = [f"x{i}" for i in range(width)]
        raw = list(names)
    return names, raw


def token_texts(preprocessor: Any, vocab_size: int) -> list[str]:
    """The text of each token id, for the CSV of top tokens."""
    tokenizer = getattr(preprocessor, "tokenizer", None)
    tokens = getattr(tokenizer, "tokens", None)
    if tokens:
        return [str(t) for t in tokens] + [f"#{i}" for i in range(len(tokens), vocab_size)]
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "id_to_token"):
        return [str(inner.id_to_token(i) or f"#{i}") for i in range(vocab_size)]
    return [f"#{i}" for i in range(vocab_size)]
