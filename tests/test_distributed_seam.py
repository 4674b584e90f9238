"""The distributed seam: one process is rank 0 of 1; in a real 2-process gloo group the
answers come from torch.distributed, and rank 1's writers write nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from trainlab.engine import distributed


def test_a_single_process_is_rank_0_of_1() -> None:
    assert distributed.rank() == 0
    assert distributed.world_size() == 1
    assert distributed.is_main_process()
    values = torch.tensor([1.0, 2.5, -4.0])
    for op in ("sum", "mean", "max", "min"):
        reduced = distributed.reduce(values, op)
        assert torch.equal(reduced, values)
        assert reduced is not values  # a new tensor, as with a group
    assert torch.equal(distributed.all_reduce_mean(values), values)
    with pytest.raises(ValueError, match="reduce op 'avg': choose one of sum, mean, max, min"):
        distributed.reduce(values, "avg")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_everything(rank: int, port: int, root: str) -> None:
    """One rank of a 2-process group: check the seam's answers, then run every writer into
    this rank's own folder (rank 1's must stay empty)."""
    import torch.distributed as dist

    from trainlab.app.experiment import write_json_atomic
    from trainlab.components.callbacks import ModelCheckpoint
    from trainlab.components.data import TensorBatches
    from trainlab.components.loggers import TensorBoardLogger
    from trainlab.engine.trainer import Trainer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        assert (distributed.rank(), distributed.world_size()) == (rank, 2)
        assert distributed.is_main_process() == (rank == 0)
        mine = torch.tensor([rank + 1.0, 10.0 * rank])
        assert distributed.reduce(mine, "sum").tolist() == [3.0, 10.0]
        assert distributed.all_reduce_mean(mine).tolist() == [1.5, 5.0]
        assert distributed.reduce(mine, "max").tolist() == [2.0, 10.0]
        assert distributed.reduce(mine, "min").tolist() == [1.0, 0.0]
        assert mine.tolist() == [rank + 1.0, 10.0 * rank]  # the input is left as it was

        folder = Path(root) / f"rank{rank}"
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        inputs, targets = torch.randn(16, 3), torch.arange(16) % 2
        trainer = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            nn.CrossEntropyLoss(),
            max_epochs=2,
            callbacks=[ModelCheckpoint(folder / "checkpoints", monitor="val/loss")],
            logger=TensorBoardLogger(folder / "tb"),
        )
        trainer.fit(TensorBatches(inputs, targets, 4), TensorBatches(inputs, targets, 8))
        trainer.logger.log_hparams({"lr": 0.1}, {"val/loss": 1.0})
        trainer.logger.close()
        write_json_atomic({"rank": rank}, folder / "metrics.json")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes start and import torch: about a minute on a busy 2-core host
def test_in_a_two_process_group_only_rank_0_writes(tmp_path) -> None:
    mp.spawn(write_everything, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in written if not p.startswith("rank0/tb/")] == [
        "rank0/checkpoints/best.pt",
        "rank0/checkpoints/last.pt",
        "rank0/metrics.json",
    ]
    assert len([p for p in written if p.startswith("rank0/tb/events.out.tfevents")]) == 1
    assert not (tmp_path / "rank1").exists()


def test_a_process_other_than_the_main_one_gets_no_hydra_files() -> None:
    # What RunFolder sets on ranks other than 0: no `.hydra/` folder and no train.log.
    from conftest import CONFIG_DIR
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from trainlab.app.runs import write_nothing

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True)
    hydra = cfg.hydra
    assert hydra.output_subdir == ".hydra" and "file" in hydra.job_logging.root.handlers
    OmegaConf.set_readonly(hydra, True)  # as in Hydra's runtime
    write_nothing(hydra)
    assert hydra.output_subdir is None
    assert "file" not in hydra.job_logging.handlers
    assert list(hydra.job_logging.root.handlers) == ["console"]
