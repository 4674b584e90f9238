"""One run on several processes: how batches are cut between ranks, the environment a
launcher gives, and (in a real 2-process gloo group, started by fork so it is quick)
equal training, exact evaluation and every rank's RNG in a checkpoint."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo  # imported before the fork (see below)
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from trainlab.components.data.loaders import LoaderBatches
from trainlab.components.metrics import TaskMetrics
from trainlab.engine import distributed
from trainlab.engine.batches import IterableBatches, TensorBatches
from trainlab.engine.distributed import first_host, shard_batch, torch_env_from_slurm
from trainlab.engine.trainer import Trainer
from trainlab.errors import ConfigError, TrainlabError

# Imported here, before the test forks its two processes: the first DistributedDataParallel
# imports torch._dynamo (some 800 modules), which each process would import again.


def test_a_global_batch_is_cut_by_rank() -> None:
    rows = np.arange(64)
    assert shard_batch(rows, 0, 2).tolist() == list(range(32))
    assert shard_batch(rows, 1, 2).tolist() == list(range(32, 64))
    assert shard_batch(rows, 0, 1) is rows
    # A shorter last batch as evenly as it goes, the first ranks a row more; every row once.
    parts = [shard_batch(np.arange(10), rank, 4).tolist() for rank in range(4)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert [len(shard_batch(torch.arange(3), rank, 2)) for rank in range(2)] == [2, 1]


def test_slurm_tasks_get_torch_distributed_variables() -> None:
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[03-05,9],cpu1",
        "SLURM_JOB_ID": "123456",
    }
    assert torch_env_from_slurm(slurm) == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu03",
        "MASTER_PORT": str(20000 + 123456 % 20000),
    }
    assert torch_env_from_slurm(slurm | {"MASTER_PORT": "29500"})["MASTER_PORT"] == "29500"
    assert first_host("node7") == "node7"
    assert first_host("a[1-2]") == "a1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def data(rows: int = 203) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, 6, generator=generator)
    return inputs, (inputs[:, :3].sum(1) > 0).long() + (inputs[:, 3] > 1).long()


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def train(batch_size: int, sharding: str = "batches") -> nn.Module:
    """An MLP trained 2 epochs with SGD (no dropout, no batch norm) on `data()`."""
    model = mlp()
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.5), nn.CrossEntropyLoss(), max_epochs=2
    )
    inputs, targets = data(256)
    trainer.fit(TensorBatches(inputs, targets, batch_size, shuffle=True, seed=3, sharding=sharding))
    return model


def evaluate(model: nn.Module) -> tuple[dict[str, float], torch.Tensor]:
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        max_epochs=1,
        metrics=TaskMetrics("multiclass", 3, torch.device("cpu")),
    )
    values = trainer.test(TensorBatches(*data(), 16))
    return values, trainer.outputs[0]


def one_rank(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        inputs, targets = data()
        # Training batches: this rank's half of each global batch of 2 x 8 rows, by both paths.
        options = {"shuffle": True, "seed": 5, "sharding": "batches"}
        tensors = TensorBatches(inputs, targets, 8, **options)
        loader = LoaderBatches(inputs, targets, 8, device=torch.device("cpu"), **options)
        mine = [b[0] for b in tensors.epoch(1)]
        assert len(tensors) == len(loader) == 13  # 203 rows in global batches of 16
        assert all(torch.equal(a, b[0]) for a, b in zip(mine, loader.epoch(1), strict=True))
        assert [len(b) for b in mine] == [8] * 12 + ([6] if rank == 0 else [5])
        assert [len(b[0]) for b in tensors.epoch(1, start=11)] == [8, 6 if rank == 0 else 5]
        # A user's loader without a DistributedSampler would give each rank every row.
        with pytest.raises(TrainlabError, match="a list of batches on 2 processes would give"):
            IterableBatches([(inputs, targets)], torch.device("cpu"))
        sampler = DistributedSampler(TensorDataset(inputs, targets), shuffle=False)
        loader = DataLoader(TensorDataset(inputs, targets), batch_size=8, sampler=sampler)
        assert len(IterableBatches(loader, torch.device("cpu"))) == 13
        # Evaluation: a contiguous part of the split each.
        assert len(TensorBatches(inputs, targets, 16).inputs) == (102 if rank == 0 else 101)
        model = train(32)
        values, outputs = evaluate(model)
        rng = Trainer(
            model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), max_epochs=1
        ).checkpoint()
        if rank == 0:
            rows = [b.tolist() for b in mine]
            torch.save(
                {
                    "model": model.state_dict(),
                    "values": values,
                    "outputs": outputs,
                    "rows": rows,
                    "rng": rng["rng_by_rank"],
                    "world": rng["world_size"],
                },
                Path(folder) / "rank0.pt",
            )
    finally:
        dist.destroy_process_group()


def test_two_processes_train_as_one_with_the_global_batch(tmp_path: Path) -> None:
    """The CI's 2-process gloo test: batches, equivalence, exact evaluation, RNG by rank."""
    evaluate(mlp())  # torchmetrics' imports, before the fork (as torch._dynamo's above)
    mp.start_processes(one_rank, (free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    got = torch.load(tmp_path / "rank0.pt", weights_only=True)
    # Rank 0's part of each global batch is the first half of one process's batch of 16.
    whole = [b[0] for b in TensorBatches(*data(), 16, shuffle=True, seed=5).epoch(1)]
    first_rows = {tuple(r.tolist()) for r in data()[0]}
    assert len(got["rows"]) == len(whole) == 13
    assert {tuple(r) for batch in got["rows"] for r in batch} <= first_rows
    for mine, batch in zip(got["rows"], whole, strict=True):
        assert torch.equal(torch.tensor(mine), batch[: len(mine)])
    # Equivalence: 2 processes x batch 32 end with the weights of 1 process x batch 64.
    single = train(64, sharding="contiguous")
    difference = max(
        (a - b).abs().max().item()
        for a, b in zip(got["model"].values(), single.state_dict().values(), strict=True)
    )
    assert difference <= 1e-5
    # Evaluation over the whole split, equal to one process's of the same weights.
    single.load_state_dict(got["model"])
    values, outputs = evaluate(single)
    assert got["values"].keys() == values.keys()
    assert all(abs(got["values"][k] - values[k]) <= 1e-6 for k in values)
    assert torch.allclose(got["outputs"], outputs, atol=1e-6) and len(outputs) == 203
    # Each rank's generators, by rank (the ranks are seeded alike here, drawn apart).
    assert got["world"] == 2 and len(got["rng"]) == 2


def test_one_process_is_unchanged_by_sharding_options() -> None:
    inputs, targets = data(50)
    train_batches = TensorBatches(inputs, targets, 8, shuffle=True, sharding="batches")
    eval_batches = TensorBatches(inputs, targets, 8, shuffle=True)
    assert [b[1].tolist() for b in train_batches.epoch(2)] == [
        b[1].tolist() for b in eval_batches.epoch(2)
    ]
    assert distributed.world_size() == 1 and train_batches.global_batch_size == 8


@pytest.mark.parametrize("value", ["0", "x"])
def test_bad_device_counts_are_refused(value: str) -> None:
    from trainlab.app.processes import devices_on_command_line

    with pytest.raises(ConfigError, match=f"trainer.devices={value}: must be auto or a positive"):
        devices_on_command_line([f"trainer.devices={value}"])
    assert devices_on_command_line(["model=cnn"]) == 1
    assert devices_on_command_line(["trainer.devices=4", "trainer.devices=2"]) == 2


def test_devices_outside_the_command_line_or_in_a_sweep_are_refused(capsys) -> None:
    from conftest import compose_config

    from trainlab.app.cli import cli
    from trainlab.app.config import validate
    from trainlab.app.processes import check_processes

    cfg = compose_config("trainer.devices=2")
    with pytest.raises(ConfigError, match=r"trainer\.devices=2 starts processes only when given"):
        check_processes(validate(cfg)["trainer"], cfg)
    check_processes(validate(compose_config())["trainer"], cfg)  # 1 process: fine
    with pytest.raises(SystemExit) as stopped:
        cli(["-m", "trainer.devices=2", "optim.lr=0.1,0.2"])
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: trainer.devices=2 with -m: a sweep's jobs cannot each start")
    assert "\n" not in line
