"""One run on several processes: starting them (`trainer.devices=N`), joining their group,
and the checks that keep them one run (docs/distributed.md).

torchrun, SLURM or trainlab's own launcher (torch's elastic launcher, as torchrun uses it)
start the processes; each joins the group in `RunFolder` before a run folder is chosen, so
rank 0 alone chooses it. Imports no torch until several processes are asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import uuid
from typing import TYPE_CHECKING, Any, NoReturn

from trainlab.engine import distributed
from trainlab.errors import ConfigError, DivergenceError, Preempted

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from trainlab.engine.schemas import TrainerSchema

log = logging.getLogger("trainlab")


def devices_on_command_line(argv: list[str]) -> int:
    """The number of processes `trainer.devices=...` on the command line asks for (1: none)."""
    pairs = [arg.split("=", 1) for arg in argv if "=" in arg]
    values = [value for key, value in pairs if key.lstrip("+") == "trainer.devices"]
    return device_count(values[-1]) if values else 1


def device_count(value: Any) -> int:
    """`trainer.devices` as a number of processes: `auto` is one per CUDA GPU (1 without)."""
    if str(value) == "auto":
        import torch

        return max(torch.cuda.device_count(), 1)
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"trainer.devices={value}: must be auto or a positive integer, e.g. 2")
    return count


def launch(argv: list[str], count: int) -> NoReturn:
    """Run `trainlab <argv>` as `count` processes of one run on this machine, through torch's
    elastic launcher (what `torchrun --standalone --nproc_per_node=count` does), and exit
    with the status of the first process that failed (0 when all finished)."""
    if any(arg in ("-m", "--multirun") for arg in argv):
        raise ConfigError(
            f"trainer.devices={count} with -m: a sweep's jobs cannot each start processes "
            "here; run each job under torchrun, or use hydra/launcher=submitit_slurm with "
            "hydra.launcher.tasks_per_node (docs/distributed.md)"
        )
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The launcher's own reports (a failed process's traceback file, a summary) are left
    # out: each process prints its one line, and a killed one gets its line below.
    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:
        if name.startswith("torch.distributed.elastic"):  # some set their own level
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=count,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port, as torchrun --standalone
        max_restarts=0,
        monitor_interval=0.1,  # a failed process ends the others within a fraction of a second
    )
    try:
        elastic_launch(config, sys.executable)("-m", "trainlab", *argv)
    except ChildFailedError as ex:
        rank, failure = ex.get_first_failure()
        if failure.exitcode > 0:  # the process printed its own line
            sys.exit(failure.exitcode)
        print(
            f"error: process {rank} of {count} was killed ({failure.signal_name()}), so the "
            "run stopped; to continue it, run the same command with resume=auto",
            file=sys.stderr,
        )
        sys.exit(128 - failure.exitcode)
    except SignalException as ex:  # the processes got the signal too, and saved
        sys.exit(128 + int(ex.sigval))
    sys.exit(0)


def join(config: DictConfig) -> None:
    """Join the run's process group if a launcher started several processes (RunFolder
    calls this first, so that rank 0 alone chooses the run folder)."""
    if distributed.launched_world_size() <= 1:
        return
    trainer = config.get("trainer") or {}
    device = str(trainer.get("device", "auto"))
    cuda = device.startswith("cuda")
    if device == "auto":
        import torch

        cuda = torch.cuda.is_available()
    distributed.init_process_group(cuda, float(trainer.get("dist_timeout_s", 300.0)))


def check_processes(trainer_cfg: TrainerSchema, cfg: DictConfig) -> None:
    """Refuse a run whose processes would not be one run: `trainer.devices` that this
    launch does not match, or configs that differ between the processes."""
    world = distributed.world_size()
    wanted = device_count(trainer_cfg.devices)
    if world == 1 and wanted > 1:
        raise ConfigError(
            f"trainer.devices={trainer_cfg.devices} starts processes only when given on the "
            "command line of a single run (trainlab trainer.devices=N); from a config file "
            "or a sweep, run the command under torchrun --nproc_per_node=N instead"
        )
    if world > 1 and wanted not in (1, world):
        raise ConfigError(
            f"trainer.devices={trainer_cfg.devices} but the launcher started {world} "
            "processes: drop trainer.devices (torchrun's --nproc_per_node decides)"
        )
    if world > 1:
        from omegaconf import OmegaConf

        text = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
        digests = distributed.gather_objects(hashlib.sha256(text.encode()).hexdigest())
        if differing := [rank for rank, d in enumerate(digests) if d != digests[0]]:
            raise ConfigError(
                f"the processes of this run have different configs (rank {differing[0]} "
                "differs from rank 0): start every process with the same command and overrides"
            )


def place_on_device(device: torch.device) -> torch.device:
    """Each process of a CUDA run on its own GPU (LOCAL_RANK's)."""
    if distributed.world_size() > 1 and device.type == "cuda":
        import torch

        return torch.device("cuda", distributed.local_rank())
    return device


def sync_batch_norm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` with its batch norms computing statistics over every process's batch."""
    import torch

    if device.type != "cuda":
        raise ConfigError(
            f"trainer.sync_batch_norm=true: torch's SyncBatchNorm runs on CUDA GPUs only, and "
            f"this run is on {device.type}; drop it (each process then normalises with its "
            "own batch's statistics)"
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def describe(batch_size: int, accumulate: int) -> str | None:
    """The line naming the processes and the global batch, None for one process."""
    world = distributed.world_size()
    if world == 1:
        return None
    import torch.distributed as dist

    total = batch_size * world * accumulate
    return (
        f"{world} processes ({dist.get_backend()}), global batch {total} = data.batch_size "
        f"{batch_size} x {world} processes x {accumulate} accumulated"
    )


# What gloo and NCCL say when a process of the group has ended.
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def told_by_another_process(error: BaseException) -> bool:
    """Whether another process of the run reports `error`, so this one ends without a line:
    an error every process meets at the same step (divergence, a stop) is told by the main
    process; a collective broken because another process ended, by that process (or by
    the launcher, for one that was killed)."""
    if distributed.world_size() == 1:
        return False
    if isinstance(error, (DivergenceError, Preempted)):
        return not distributed.is_main_process()
    return isinstance(error, RuntimeError) and any(words in str(error) for words in PEER_GONE)
