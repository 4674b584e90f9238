"""The model graph logged to TensorBoard is traced once per architecture in a process (a
sweep's trials share a few); what is logged must be what a fresh trace gives."""

from __future__ import annotations

import pytest
import torch
from torch.utils.tensorboard._pytorch_graph import graph

from trainlab.components.callbacks import figures
from trainlab.components.models.mlp import MLP
from trainlab.components.models.transformer import Transformer

TOKENS = torch.randint(1, 50, (2, 12))
ROWS = torch.randn(2, 64)
# Models that differ only in a setting, one after the other: a key that missed a setting
# would hand the later one the earlier one's graph.
MODELS = [
    (lambda: MLP([64], 10, [128], dropout=0.1), ROWS),
    (lambda: MLP([64], 10, [128], dropout=0.3), ROWS),
    (lambda: Transformer([12], 4, "tokens", vocab_size=50, pooling="mean"), TOKENS),
    (lambda: Transformer([12], 4, "tokens", vocab_size=50, pooling="cls"), TOKENS),
]


def serialized(traced) -> bytes:
    return traced[0].SerializeToString()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@torch.no_grad()  # as the callback traces
def test_a_kept_graph_is_the_one_a_fresh_trace_gives() -> None:
    figures._GRAPHS.clear()
    for make, example in MODELS:
        torch.manual_seed(0)
        first = figures.model_graph(make().eval(), example)
        torch.manual_seed(1)  # other weights, same architecture: the kept graph
        model = make().eval()
        kept = figures.model_graph(model, example)
        assert kept is first
        assert serialized(kept) == serialized(graph(model, example)), make
    assert len(figures._GRAPHS) == len(MODELS)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_a_users_model_is_traced_every_time() -> None:
    figures._GRAPHS.clear()
    model = torch.nn.Sequential(torch.nn.Linear(64, 10))
    assert serialized(figures.model_graph(model, ROWS)) == serialized(graph(model, ROWS))
    assert figures.model_graph(model, ROWS) is not figures.model_graph(model, ROWS)
    assert not figures._GRAPHS
