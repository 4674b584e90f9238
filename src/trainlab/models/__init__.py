"""Models. Each takes `input_shape` and `num_outputs` from the data, the rest from its config."""

from trainlab.models.mlp import MLP

__all__ = ["MLP"]
