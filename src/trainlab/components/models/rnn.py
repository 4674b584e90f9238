"""A recurrent classifier (LSTM or GRU) for token sequences and for images as rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from trainlab.components.models.sequence import image_rows, last_positions
from trainlab.errors import ConfigError

CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}


class RNN(nn.Module):
    """Embed (tokens) or read rows (images) -> LSTM / GRU -> last hidden state(s) -> Linear.

    Token sequences are packed with their lengths, so the final state is the one after
    each sequence's last token and padding never reaches it. With `bidirectional`, the
    last layer's final forward and backward states are concatenated. `dropout` acts
    between stacked layers (torch's own argument) and on the state fed to the head.
    """

    input_kinds = ("tokens", "image")

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        input_kind: str,
        vocab_size: int | None = None,
        padding_idx: int = 0,
        cell: str = "lstm",
        embedding_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        self.input_kind, self.padding_idx = input_kind, padding_idx
        if input_kind == "tokens":
            if vocab_size is None:
                raise ConfigError("model=rnn on tokens needs the data's vocab_size")
            self.embed: nn.Module | None = nn.Embedding(
                vocab_size, embedding_dim, padding_idx=padding_idx
            )
            input_size = embedding_dim
        else:
            channels, _, width = input_shape
            self.embed, input_size = None, channels * width
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            # torch applies it between layers only (and warns when there is one layer).
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.directions * hidden_size, num_outputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            lengths = last_positions(inputs == self.padding_idx)
            # The lengths must be on the CPU (a torch requirement of packing).
            sequence = pack_padded_sequence(
                self.embed(inputs), lengths.cpu(), batch_first=True, enforce_sorted=False
            )
        else:
            sequence = image_rows(inputs)
        _, state = self.rnn(sequence)
        hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
        # h_n is (layers * directions, N, hidden); keep the last layer's directions.
        last = hidden[-self.directions :].transpose(0, 1).reshape(inputs.shape[0], -1)
        return self.head(self.dropout(last))
