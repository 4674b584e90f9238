"""Train the experiment the config describes: `python train.py [group=option] [key=value]`.

See README.md for the config groups and examples; `python train.py --help` lists them.
"""

import hydra
from omegaconf import DictConfig

from trainlab.entry import main, report_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@report_errors
def train(cfg: DictConfig) -> float:
    from trainlab.cli import run

    return run(cfg)


if __name__ == "__main__":
    main(train)
