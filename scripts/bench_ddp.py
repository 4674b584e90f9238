"""trainlab on 2 processes (DDP, gloo on CPU) against a hand-written DDP loop, and what
the processes cost.

    python scripts/bench.py --ddp                        # MLP, CNN, Transformer at 64 and 512
    python scripts/bench.py --ddp --models mlp --batch-sizes 64 --rounds 3 --ddp-samples 4096

For each model and per-process batch size, four contenders train the same model on the
same generated data (`bench.bench_overrides`), each for `--warmup` + `--rounds` epochs:

    trainlab-ddp   `experiment.build` + `Trainer.fit` on 2 processes x 1 thread, as a user
                   runs it (callbacks, TensorBoard, metrics), data.batch_size = B
    hand-ddp       DistributedDataParallel + DistributedSampler written by hand, 2 processes
                   x 1 thread, batches of B sliced from tensors, validation on each half
    trainlab-1x1   trainlab on 1 process x 1 thread, batch B (for DDP's per-step overhead)
    trainlab-1x2   trainlab on 1 process x 2 threads, batch 2B (the same global batch)

The data is `--ddp-samples` rows (default 102,400: 80 steps of 512 x 2 an epoch, 640 of
64 x 2). An epoch of trainlab also scores its validation split exactly (five metrics,
synced between the processes) and writes a checkpoint, which the hand-written loop does
not: a fixed cost of some 60 ms an epoch here, a fifth of an epoch at 20,480 rows and
batch 512.

Processes are forked from this one (torch and trainlab already imported). An epoch is
training plus validation; samples/s is training rows over the epoch's wall time, the
median of the timed rounds. Reported: trainlab-ddp / hand-ddp (the bar: >= 0.95), the
per-step time of trainlab-ddp minus trainlab-1x1 (the cost of the gradient all-reduce and
the stop flag), and 2 x 1 thread against 1 x 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ("trainlab-ddp", "hand-ddp", "trainlab-1x1", "trainlab-1x2")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config(model: str, batch_size: int, args: argparse.Namespace, folder: Path):
    from bench import bench_overrides, compose

    overrides = bench_overrides(model, batch_size, args.ddp_samples, "cpu")
    epochs = args.warmup + args.rounds
    return compose(
        [
            *overrides,
            f"trainer.max_epochs={epochs}",
            "trainer.num_threads=1",
            "callbacks.early_stopping=null",
            f"paths.output_dir={folder}",
        ]
    )


def epoch_times(trainer) -> list[float]:
    """Append a callback timing each epoch (training and validation) to `trainer`."""
    from trainlab.engine.callback import Callback

    times: list[float] = []

    class Timer(Callback):
        def on_epoch_start(self, trainer, state) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, trainer, state) -> None:
            times.append(time.perf_counter() - self.started)

    trainer.callbacks.append(Timer())
    return times


def trainlab_worker(cfg, out: Path) -> None:
    from trainlab.app.experiment import build
    from trainlab.engine import distributed

    exp = build(cfg)
    times = epoch_times(exp.trainer)
    exp.trainer.fit(exp.train, exp.val)
    if exp.trainer.logger is not None:
        exp.trainer.logger.close()
    if distributed.is_main_process():
        steps = len(exp.train)
        out.write_text(json.dumps({"times": times, "steps": steps, "rows": len(exp.data.train)}))


def hand_worker(cfg, batch_size: int, out: Path) -> None:
    """The loop most people write with DDP: DistributedSampler, slices, Adam."""
    import torch
    import torch.distributed as dist
    from hydra.utils import instantiate
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    from trainlab.components.losses import num_outputs
    from trainlab.components.models import build_model

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = instantiate(cfg.data, seed=0, _convert_="all")
    torch.manual_seed(0)
    net = DistributedDataParallel(build_model(cfg.model, data.info, num_outputs(cfg.loss, data)))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = data.train.inputs, data.train.targets
    sampler = DistributedSampler(range(len(x)), num_replicas=world, rank=rank, seed=0)
    val_rows = torch.tensor_split(torch.arange(len(data.val.inputs)), world)[rank]
    vx, vy = data.val.inputs[val_rows], data.val.targets[val_rows]
    times = []
    for epoch in range(cfg.trainer.max_epochs):
        started = time.perf_counter()
        net.train()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            outputs = net.module(vx)
            counts = torch.stack(
                [(outputs.argmax(1) == vy).sum().float(), torch.tensor(float(len(vy)))]
            )
        dist.all_reduce(counts)
        times.append(time.perf_counter() - started)
    if rank == 0:
        out.write_text(json.dumps({"times": times, "rows": len(x)}))
    # The DDP module holds the process group: dropped first, or tearing the group down
    # when the function returns can hang in gloo's destructor once the other rank is gone.
    del net, optimizer
    dist.barrier()
    dist.destroy_process_group()


def process(rank: int, world: int, port: int, job: dict[str, Any]) -> None:
    import torch

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(job["threads"])
    if job["contender"] == "hand-ddp":
        hand_worker(job["cfg"], job["batch_size"], job["out"])
    else:
        trainlab_worker(job["cfg"], job["out"])


def run_contender(contender: str, model: str, batch_size: int, args) -> dict[str, Any]:
    import torch.multiprocessing as mp
    from omegaconf import open_dict

    world = 1 if contender.startswith("trainlab-1") else 2
    threads = 2 if contender == "trainlab-1x2" else 1
    size = batch_size * 2 if contender == "trainlab-1x2" else batch_size
    folder = Path(tempfile.mkdtemp(prefix=f"bench_ddp_{contender}_"))
    cfg = config(model, size, args, folder / "run")
    with open_dict(cfg):
        cfg.trainer.num_threads = threads
    out = folder / "result.json"
    job = {"contender": contender, "cfg": cfg, "batch_size": size, "out": out, "threads": threads}
    mp.start_processes(process, (world, free_port(), job), nprocs=world, start_method="fork")
    result = json.loads(out.read_text())
    timed = result["times"][args.warmup :]
    epoch = statistics.median(timed)
    steps = math_ceil(result["rows"], size * world)
    return {"samples_per_s": result["rows"] / epoch, "step_ms": 1000 * epoch / steps}


def math_ceil(rows: int, batch: int) -> int:
    return -(-rows // batch)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import torch._dynamo  # noqa: F401  (imported once here, not in every forked process)

    from trainlab.components.metrics import TaskMetrics

    TaskMetrics("multiclass", 10, "cpu")  # torchmetrics' imports, likewise
    results = []
    for model in args.models.split(","):
        for batch_size in map(int, args.batch_sizes.split(",")):
            print(f"  {model}, batch {batch_size} per process ...", flush=True)
            row = {"model": model, "batch_size": batch_size}
            for contender in CONTENDERS:
                row[contender] = run_contender(contender, model, batch_size, args)
            results.append(row)
            report_ddp([row], header=len(results) == 1)  # each row as soon as it is measured
    return {"ddp": results}


def report_ddp(results: list[dict[str, Any]], header: bool = True) -> None:
    if not header:
        return print_rows(results)
    print(
        "\nsamples/s (median of the timed epochs); ddp = 2 processes x 1 thread (gloo)\n"
        f"{'model':<12}{'batch':>6}{'trainlab-ddp':>14}{'hand-ddp':>10}{'ratio':>7}"
        f"{'1x1':>9}{'step+ (ms)':>11}{'1x2 thr':>9}{'2x1/1x2':>9}"
    )
    print(
        "step+ : trainlab-ddp's time per optimizer step minus trainlab-1x1's (same batch per "
        "process): the all-reduce of gradients, the stop flag and the sharded evaluation"
    )
    print_rows(results)


def print_rows(results: list[dict[str, Any]]) -> None:
    for row in results:
        ddp, hand = row["trainlab-ddp"], row["hand-ddp"]
        single, threads = row["trainlab-1x1"], row["trainlab-1x2"]
        print(
            f"{row['model']:<12}{row['batch_size']:>6}{ddp['samples_per_s']:>14,.0f}"
            f"{hand['samples_per_s']:>10,.0f}{ddp['samples_per_s'] / hand['samples_per_s']:>7.2f}"
            f"{single['samples_per_s']:>9,.0f}{ddp['step_ms'] - single['step_ms']:>11.2f}"
            f"{threads['samples_per_s']:>9,.0f}"
            f"{ddp['samples_per_s'] / threads['samples_per_s']:>9.2f}",
            flush=True,
        )
