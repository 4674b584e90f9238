"""A trainlab callback for `scripts/bench.py`, added to a run from the command line:

    python train.py +callbacks.bench_probe._target_=bench_probe.FirstStepProbe

(with `scripts/` on PYTHONPATH). It reports when the first optimizer step ended.
"""

from __future__ import annotations

from bench import probe_first_step

from trainlab.engine.callback import Callback


class FirstStepProbe(Callback):
    def on_train_step_end(self, trainer, state) -> None:
        probe_first_step()
