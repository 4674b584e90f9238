"""trainlab's Optuna sweeper for Hydra: random and TPE search with pruning and resume.

Chosen with `hydra/sweeper=trainlab_optuna` (the configs in `configs/hparams_search/` do
that). Hydra imports this package's public modules when it scans for plugins, so they
import optuna and trainlab's training code only when a sweep starts.
"""
