"""The best-so-far logic shared by EarlyStopping, ModelCheckpoint and plateau schedules."""

from __future__ import annotations

import operator

# Metrics where larger is better; `mode="auto"` minimises everything else (Keras's rule).
MAXIMISED = ("acc", "accuracy", "precision", "recall", "f1", "auroc", "auc", "r2", "ap")


def resolve_mode(monitor: str, mode: str) -> str:
    if mode in ("min", "max"):
        return mode
    name = monitor.rsplit("/", 1)[-1]
    return "max" if name in MAXIMISED else "min"


class Monitor:
    """Tracks one metric: is a new value an improvement of at least `min_delta`?"""

    def __init__(self, monitor: str, mode: str = "auto", min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.better = operator.gt if self.mode == "max" else operator.lt
        # Keras: the delta is added against the direction of improvement.
        self.min_delta = abs(min_delta) if self.mode == "max" else -abs(min_delta)

    def is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        return bool(self.better(value - self.min_delta, reference))

    def value(self, metrics: dict[str, float]) -> float | None:
        return metrics.get(self.monitor)
