"""Models, and how one is built for the data it will see (`build`).

The classes are imported when first used (PEP 562), so `models.schemas` (their settings)
is read without importing torch: `--help` and config errors stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainlab.lazy import lazy_exports

if TYPE_CHECKING:
    from trainlab.components.models.build import SHIPPED, build_model
    from trainlab.components.models.cnn import CNN
    from trainlab.components.models.mlp import MLP
    from trainlab.components.models.rnn import RNN
    from trainlab.components.models.transformer import Transformer

# name -> the module that defines it
_MODULES = {
    "CNN": "trainlab.components.models.cnn",
    "MLP": "trainlab.components.models.mlp",
    "RNN": "trainlab.components.models.rnn",
    "Transformer": "trainlab.components.models.transformer",
    "SHIPPED": "trainlab.components.models.build",
    "build_model": "trainlab.components.models.build",
}


__getattr__ = lazy_exports(__name__, _MODULES)


__all__ = ["CNN", "MLP", "RNN", "SHIPPED", "Transformer", "build_model"]
