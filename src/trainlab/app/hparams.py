"""What TensorBoard's HParams tab shows for a run: its hyperparameters, in a useful order."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.app.sweeps.optuna_study import TRIAL_KEY

# The HParams tab's columns after the command's own overrides: the options chosen and the
# settings runs are most often compared on, then the model's fields.
ESSENTIAL_HPARAMS = (
    "data", "model", "optim", "optim.lr", "optim.weight_decay", "sched", "loss",
    "data.batch_size", "trainer.max_epochs", "seed",
)  # fmt: skip
OPTION_GROUPS = ("data", "model", "loss", "optim", "sched")


def hparams(cfg: DictConfig, seed: int) -> dict[str, Any]:
    """The hyperparameters shown in TensorBoard's HParams tab: what the command set (a
    sweep's varied keys among them) first, then the essentials and the model's fields."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    model_fields = [
        f"model.{key}" for key in (cfg.get("model") or {}) if not str(key).startswith("_")
    ]
    flat: dict[str, Any] = {}
    for key in [*chosen_hparams(), *ESSENTIAL_HPARAMS, *model_fields]:
        if key in flat:
            continue
        if key == "seed":
            flat[key] = seed
        elif key in OPTION_GROUPS or key in choices:  # the option chosen, else the class
            target = OmegaConf.select(cfg, f"{key}._target_", default=None)
            chosen = choices.get(key) or (str(target).rsplit(".", 1)[-1] if target else None)
            if chosen is not None:
                flat[key] = chosen
        elif OmegaConf.select(cfg, key, default="<missing>") != "<missing>":
            value = OmegaConf.select(cfg, key)
            flat[key] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return flat


def chosen_hparams() -> list[str]:
    """The keys the command line set (a sweep's job included), in its order; none when the
    config was composed in Python."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = []
    for override in HydraConfig.get().overrides.task:
        key = str(override).split("=", 1)[0].lstrip("+")
        if key.startswith("~") or key.split(".")[0] in ("hydra", "paths", "resume", TRIAL_KEY):
            continue
        keys.append(key.removesuffix("@_global_"))
    return keys
