"""trainlab against hand-written PyTorch loops (and Lightning), side by side.

    python scripts/bench.py                        # everything: ~9 minutes on 2 CPU cores
    python scripts/bench.py --models mlp --batch-sizes 64 --rounds 5
    python scripts/bench.py --skip-process         # training throughput only
    python scripts/bench.py --skip-throughput      # whole-process wall time only
    python scripts/bench.py --json bench.json      # also write every figure as JSON
    python scripts/bench.py --ddp                  # 2 processes (DDP) against a hand loop
    python scripts/bench.py --threads              # trainer.num_threads=1, 2, auto;
                                                   # quiet and busy (scripts/bench_threads.py)
    python scripts/bench.py --quantize             # int8: torch.ao vs torchao vs fp32
                                                   # (scripts/bench_quantize.py)
    python scripts/bench.py --export               # latency of exported ONNX / TorchScript
                                                   # files against eager (bench_export.py)
    python scripts/bench.py --image-folder         # data=image_folder's loader against a
                                                   # hand-written DataLoader (bench_images.py)
    python scripts/bench.py --streaming            # a 2 GB Parquet table streamed against a
                                                   # pyarrow loop (scripts/bench_streaming.py)
    python scripts/bench.py --serve                # `trainlab serve` under 16 clients against
                                                   # the model in-process (scripts/bench_serve.py)
    python scripts/bench.py --same-optimizer --same-malloc   # hand loops with trainlab's
                                                   # fused Adam and allocator settings
    python scripts/bench.py --tfidf                # TF-IDF text against scikit-learn's
                                                   # LogisticRegression (scripts/bench_tfidf.py)
    python scripts/bench.py --sweeps               # trainlab -m against a hand-written
                                                   # Optuna loop; 1 and 2 workers
                                                   # (scripts/bench_sweeps.py)

Throughput. For each model and batch size one process trains the same model (one
instance each, built from the same config and seed) on the same in-memory data with each
contender, one epoch per round, the contenders taking turns round after round:

    trainlab     `trainlab.app.experiment.build` + `Trainer.fit` as a user runs it: the default
                 callbacks (checkpoints every epoch, early stopping, LR monitor, figures,
                 progress display), TensorBoard logging and all metrics on
    sliced       a hand-written loop slicing tensors on the device
    dataloader   a hand-written `DataLoader` loop (pinned memory, non-blocking copies)
    lightning    PyTorch Lightning with its defaults, when it is installed

An epoch is training plus validation. Reported: samples/s (training samples per second
of the round's wall time; median and min-max over the rounds after a warm-up round), the
ratio of each to `sliced`, and the per-step overhead against `sliced` in microseconds.
Each contender runs in a thread of its own and only one runs at a time, so every one
gets the whole machine for its rounds.

Process. `python train.py trainer.max_epochs=20` (the default digits MLP) against the same
work written by hand (imports, data, 20 epochs with validation, TensorBoard logging, a
saved model, exit) and against Lightning, each in its own process, alternating: whole
wall time, time from launch to the end of the first optimizer step, peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The probe below reports to the bench from inside another process through these.
LAUNCHED_AT, PROBE_FILE = "TRAINLAB_BENCH_LAUNCHED_AT", "TRAINLAB_BENCH_PROBE_FILE"

# What trainlab.engine.runtime.keep_freed_memory sets inside trainlab, for the other
# contenders with --same-malloc.
SAME_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
# Tells the hand-written loops and Lightning to use torch's fused Adam, as trainlab's
# optimizer configs do (optim.fused=true), with --same-optimizer.
FUSED_ADAM = "TRAINLAB_BENCH_FUSED_ADAM"

MODELS = {
    "mlp": ["model=mlp", "model.hidden_sizes=[256,256]"],  # 64-256-256-10
    "cnn": ["model=cnn"],  # two conv blocks, 32 and 64 channels
    "transformer": ["model=transformer"],  # 2 layers, d_model 64, 8 row tokens
}


# ------------------------------------------------------------------------- throughput
class Finished(Exception):
    """Raised inside a contender at a pause once the bench has all its rounds."""


class Turns:
    """A contender's side of the turn-taking, in its own process.

    The training code calls `pause()` at the end of each epoch: it reports the epoch's
    time to the bench on the protocol stream and waits for the bench's next word, `go`
    (train another epoch) or `stop`.
    """

    def __init__(self, protocol, clock: Callable[[], float]) -> None:
        self.protocol, self.clock = protocol, clock
        self.resumed_at, self.faults_at = clock(), minor_faults()

    def pause(self) -> None:
        self.tell(f"{self.clock() - self.resumed_at!r} {minor_faults() - self.faults_at}")
        self.wait()

    def wait(self) -> None:
        """Until the bench says go: then the next epoch's clock starts."""
        if sys.stdin.readline().strip() != "go":
            raise Finished
        self.resumed_at, self.faults_at = self.clock(), minor_faults()

    def tell(self, line: str) -> None:
        self.protocol.write(line + "\n")
        self.protocol.flush()


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from trainlab.app.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def bench_overrides(model: str, batch_size: int, samples: int, device: str) -> list[str]:
    """The config every contender trains: trainlab's defaults on generated 8x8 images."""
    return [
        "data=synthetic",
        f"data.n_samples={samples}",
        "data.n_features=64",
        "data.n_informative=32",
        "data.n_classes=10",
        "data.image_shape=[1,8,8]",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
        f"data.batch_size={batch_size}",
        *MODELS[model],
        f"trainer.device={device}",
        "trainer.max_epochs=1000000",  # the bench ends the run
        "seed=0",
    ]


def contender_main(args: argparse.Namespace) -> None:
    """One contender's process: set up, then train an epoch whenever the bench says go."""
    # The protocol keeps the real stdout; what the training prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    from hydra.utils import instantiate

    from trainlab.app.experiment import resolve_device
    from trainlab.components.losses import num_outputs
    from trainlab.components.models import build_model

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    turns = Turns(protocol, clock)
    name, batch_size = args.contender, args.batch_size
    workdir = Path(tempfile.mkdtemp(prefix=f"bench_{name}_"))
    device = resolve_device(args.device)
    overrides = bench_overrides(args.model, batch_size, args.samples, args.device)
    cfg = compose([*overrides, f"paths.output_dir={workdir / 'run'}"])

    def new_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(cfg.model, data.info, num_outputs(cfg.loss, data)).to(device)

    if name.startswith("trainlab"):
        import logging

        from trainlab.app.experiment import build
        from trainlab.engine.callback import Callback

        # What Hydra does for a run: the progress lines go to train.log.
        log = logging.getLogger("trainlab")
        log.setLevel(logging.INFO)
        log.addHandler(logging.FileHandler(workdir / "train.log"))
        log.propagate = False

        class Pause(Callback):
            def on_train_step_end(self, trainer, state) -> None:
                probe_first_step()

            def on_epoch_end(self, trainer, state) -> None:
                turns.pause()

        exp = build(compose([*overrides, *args.extra, f"paths.output_dir={workdir / 'run'}"]))
        for callback in exp.trainer.callbacks:  # the bench ends the run, not a plateau
            if type(callback).__name__ == "EarlyStopping":
                callback.patience = 10**9
        exp.trainer.callbacks.append(Pause())
        turns.tell(f"threads {torch.get_num_threads()} samples {exp.train.num_samples}")
        try:
            turns.wait()
            exp.trainer.fit(exp.train, exp.val)
        except Finished:
            pass
        finally:
            if exp.trainer.logger is not None:
                exp.trainer.logger.close()
    else:
        data = instantiate(cfg.data, seed=0, _convert_="all").to(device)
        net = new_model()
        turns.tell(f"threads {torch.get_num_threads()} samples {len(data.train)}")
        loop = {"sliced": sliced_loop, "dataloader": dataloader_loop, "lightning": lightning_loop}
        with contextlib.suppress(Finished):
            turns.wait()
            loop[name](net, data, batch_size, device, turns.pause, workdir)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    turns.tell(json.dumps({"cuda_peak_mb": peak, "peak_rss_mb": peak_rss_mb()}))


def same_settings(args: argparse.Namespace) -> dict[str, str]:
    """The environment that gives a hand-written loop or Lightning trainlab's settings
    (--same-malloc, --same-optimizer)."""
    env = dict(SAME_MALLOC) if args.same_malloc else {}
    if args.same_optimizer:
        env[FUSED_ADAM] = "1"
    return env


def adam(parameters):
    """The hand-written loops' optimizer: torch's Adam as most people write it, or with
    --same-optimizer the fused Adam that trainlab's configs choose."""
    import torch

    fused = True if os.environ.get(FUSED_ADAM) == "1" else None
    return torch.optim.Adam(parameters, lr=1e-3, fused=fused)


def sliced_loop(net, data, batch_size, device, pause, workdir) -> None:
    """(b) The hand-written loop: shuffle, slice tensors on the device, step."""
    import torch

    optimizer = adam(net.parameters())
    x, y = data.train.inputs, data.train.targets
    while True:
        net.train()
        order = torch.randperm(len(x), device=device)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            probe_first_step()
        validate(net, data.val.inputs, data.val.targets)
        pause()


def dataloader_loop(net, data, batch_size, device, pause, workdir) -> None:
    """(c) The hand-written DataLoader loop, pinned memory and non-blocking copies on CUDA."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    optimizer = adam(net.parameters())
    cuda = device.type == "cuda"
    train_set = TensorDataset(data.train.inputs.cpu(), data.train.targets.cpu())
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, pin_memory=cuda)
    while True:
        net.train()
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(net(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            probe_first_step()
        validate(net, data.val.inputs, data.val.targets)
        pause()


def lightning_loop(net, data, batch_size, device, pause, workdir) -> None:
    """(d) PyTorch Lightning with its defaults."""
    run_lightning(
        net,
        (data.train.inputs.cpu(), data.train.targets.cpu()),
        (data.val.inputs.cpu(), data.val.targets.cpu()),
        batch_size,
        device,
        workdir / "lightning",
        pause=pause,
    )


def minor_faults() -> int:
    """Page faults this process has taken so far: memory the allocator gave back and took again."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class ContenderProcess:
    """The bench's handle on a contender's process."""

    def __init__(self, name: str, model: str, batch_size: int, args, extra=()) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (open while the process runs)
        command = [
            sys.executable, str(Path(__file__).resolve()), "--contender", name,
            "--model", model, "--batch-size", str(batch_size), "--samples", str(args.samples),
            "--device", args.device, "--clock", args.clock, *(f"--extra={o}" for o in extra),
        ]  # fmt: skip
        env = os.environ | {LAUNCHED_AT: repr(time.time())}
        if not name.startswith("trainlab"):
            env |= same_settings(args)
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        )  # fmt: skip
        self.epoch_times: list[float] = []
        self.epoch_faults: list[int] = []
        ready = self._read().split()
        self.threads, self.train_samples = int(ready[1]), int(ready[3])
        self.result: dict[str, Any] = {}

    def _read(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            output = self.log.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} failed:\n{output}")
        return line

    def round(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        seconds, faults = self._read().split()
        self.epoch_times.append(float(seconds))
        self.epoch_faults.append(int(faults))

    def finish(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
            self.result = json.loads(self._read())
            self.process.wait()


def throughput(model: str, batch_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """One model at one batch size: every contender, `args.rounds` timed rounds each.

    Each contender trains in a process of its own: torch's OpenMP thread teams get in each
    other's way when several loops share a process (a second team made a two-thread loop
    3x slower here), and a process of its own is also how a user runs each of them.
    """
    names = ["trainlab", *(f"trainlab {n}" for n, _ in args.variant), "sliced", "dataloader"]
    if args.lightning:
        names.append("lightning")
    extras = {f"trainlab {n}": extra for n, extra in args.variant}
    contenders = [
        ContenderProcess(name, model, batch_size, args, extras.get(name, ())) for name in names
    ]
    try:
        # The first round warms up (allocations, first-call paths); then a different
        # contender goes first each round, so slow drifts of the machine spread evenly.
        for index in range(args.warmup + args.rounds):
            shift = index % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                contender.round()
    finally:
        for contender in contenders:
            contender.finish()

    train_samples = contenders[0].train_samples
    assert all(c.train_samples == train_samples for c in contenders), "different data"
    steps = math.ceil(train_samples / batch_size)
    result: dict[str, Any] = {
        "model": model,
        "batch_size": batch_size,
        "train_samples": train_samples,
        "steps_per_epoch": steps,
        "contenders": {},
    }
    for contender in contenders:
        times = contender.epoch_times[args.warmup :]
        rates = [train_samples / t for t in times]
        result["contenders"][contender.name] = {
            "samples_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "epoch_s": statistics.median(times),
            "threads": contender.threads,
            "page_faults_per_step": statistics.median(contender.epoch_faults[args.warmup :])
            / steps,
            "peak_memory_mb": contender.result.get("cuda_peak_mb")
            or contender.result.get("peak_rss_mb"),
        }
    base = result["contenders"]["sliced"]
    for entry in result["contenders"].values():
        entry["ratio"] = entry["samples_per_s"] / base["samples_per_s"]
        entry["overhead_us_per_step"] = (entry["epoch_s"] - base["epoch_s"]) / steps * 1e6
    return result


def validate(net, inputs, targets) -> float:
    """What a hand-written loop does after each epoch: validation loss and accuracy."""
    import torch

    net.eval()
    with torch.no_grad():
        total, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for start in range(0, len(inputs), 1024):
            outputs = net(inputs[start : start + 1024])
            labels = targets[start : start + 1024]
            total = total + torch.nn.functional.cross_entropy(outputs, labels, reduction="sum")
            correct = correct + (outputs.argmax(dim=1) == labels).sum()
    return (correct / len(inputs)).item()


def run_lightning(net, train, val, batch_size, device, root, *, epochs=None, pause=None):
    """Lightning with its defaults: logger, checkpointing, progress bar, model summary."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, index):
            inputs, targets = batch
            loss = torch.nn.functional.cross_entropy(self.net(inputs), targets)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, index):
            inputs, targets = batch
            outputs = self.net(inputs)
            self.log("val_loss", torch.nn.functional.cross_entropy(outputs, targets))
            self.log("val_acc", (outputs.argmax(dim=1) == targets).float().mean())

        def test_step(self, batch, index):
            inputs, targets = batch
            outputs = self.net(inputs)
            self.log("test_acc", (outputs.argmax(dim=1) == targets).float().mean())

        def configure_optimizers(self):
            return adam(self.parameters())

    class Pause(L.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            probe_first_step()

        def on_train_epoch_end(self, trainer, module) -> None:
            if pause is not None:
                pause()

    cuda = device.type == "cuda"
    trainer = L.Trainer(
        max_epochs=epochs or -1,
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        default_root_dir=str(root),
        callbacks=[Pause()],
    )
    trainer.fit(
        Classifier(),
        DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True, pin_memory=cuda),
        DataLoader(TensorDataset(*val), batch_size=1024, pin_memory=cuda),
    )
    return trainer


# ---------------------------------------------------------------------------- process
_probed = False


def probe_first_step() -> None:
    """Called after every optimizer step: the first time, report the seconds since the
    process was launched (`FirstStepProbe` calls it in trainlab's process)."""
    global _probed
    if _probed or PROBE_FILE not in os.environ:
        return
    _probed = True
    seconds = time.time() - float(os.environ[LAUNCHED_AT])
    Path(os.environ[PROBE_FILE]).write_text(f"{seconds:.4f}")


def digits_splits():
    """The default experiment's data, as a hand-written script prepares it."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    features, labels = digits.data, digits.target
    rows = np.arange(len(labels))
    rest, test = train_test_split(rows, test_size=0.15, random_state=42, stratify=labels)
    train, val = train_test_split(
        rest, test_size=0.15 / 0.85, random_state=42, stratify=labels[rest]
    )
    scaler = StandardScaler().fit(features[train])

    def split(index):
        inputs = torch.as_tensor(scaler.transform(features[index]), dtype=torch.float32)
        return inputs, torch.as_tensor(labels[index])

    return split(train), split(val), split(test)


def digits_mlp():
    from torch import nn

    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(128, 10),
    )  # fmt: skip


def handwritten_process(epochs: int, out_dir: Path) -> None:
    """The default experiment written by hand: 20 epochs of the digits MLP, validation
    each epoch, losses and accuracy to TensorBoard, the model saved, test accuracy."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(42)
    (x, y), (val_x, val_y), (test_x, test_y) = digits_splits()
    net = digits_mlp()
    optimizer = adam(net.parameters())
    writer = SummaryWriter(str(out_dir / "tb"))
    step = 0
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x))
        losses = []
        for start in range(0, len(x), 64):
            rows = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            probe_first_step()
            losses.append(loss.detach())
        for value in torch.stack(losses).tolist():
            step += 1
            writer.add_scalar("train/loss", value, step)
        accuracy = validate(net, val_x, val_y)
        writer.add_scalar("val/acc", accuracy, step)
        print(f"epoch {epoch + 1}/{epochs}  val/acc {accuracy:.4f}", flush=True)
    torch.save(net.state_dict(), out_dir / "model.pt")
    print(f"test/acc {validate(net, test_x, test_y):.4f}")
    writer.close()


def lightning_process(epochs: int, out_dir: Path) -> None:
    """The same work with Lightning's defaults."""
    import torch

    torch.manual_seed(42)
    from torch.utils.data import DataLoader, TensorDataset

    train, val, test = digits_splits()
    trainer = run_lightning(
        digits_mlp(), train, val, 64, torch.device("cpu"), out_dir, epochs=epochs
    )
    trainer.test(dataloaders=DataLoader(TensorDataset(*test), batch_size=1024))


def timed_process(command: list[str], probe: Path, extra_env=None) -> dict[str, float]:
    """Run `command` through a small launcher process and measure it there.

    The launcher, not the bench, starts it: a child's peak-memory figure on Linux starts
    from its parent's size at the fork, and the bench holds torch and data.
    """
    paths = os.pathsep.join([str(ROOT / "src"), str(ROOT / "scripts")])
    env = os.environ | {PROBE_FILE: str(probe), "PYTHONPATH": paths} | (extra_env or {})
    measured = probe.with_suffix(".json")
    launcher = [sys.executable, str(Path(__file__).resolve()), "--launch", str(measured)]
    subprocess.run([*launcher, *command], cwd=ROOT, env=env, check=True)
    result = json.loads(measured.read_text())
    if result["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result['output']}")
    return {
        "wall_s": result["wall_s"],
        "first_step_s": float(probe.read_text()) if probe.exists() else math.nan,
        "peak_rss_mb": result["peak_rss_mb"],
        "cpu_s": result["cpu_s"],
    }


def launch(result_file: str, command: list[str]) -> None:
    """The launcher: run `command`, write its wall time and peak memory to `result_file`."""
    import resource

    os.environ[LAUNCHED_AT] = repr(time.time())
    started = time.perf_counter()
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "returncode": completed.returncode,
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "output": completed.stdout.decode(errors="replace")[-3000:],
    }
    Path(result_file).write_text(json.dumps(result))


def process_times(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench_process_"))
    epochs = args.process_epochs
    python = sys.executable
    commands = {
        "trainlab": lambda k: [
            python, "train.py", f"trainer.max_epochs={epochs}",
            f"hydra.run.dir={workdir}/trainlab_{k}",
            "+callbacks.bench_probe._target_=bench_probe.FirstStepProbe",
        ],
        "handwritten": lambda k: [
            python, "scripts/bench.py", "--worker", "handwritten",
            "--process-epochs", str(epochs), "--out", f"{workdir}/handwritten_{k}",
        ],
        "lightning": lambda k: [
            python, "scripts/bench.py", "--worker", "lightning",
            "--process-epochs", str(epochs), "--out", f"{workdir}/lightning_{k}",
        ],
    }  # fmt: skip
    if not args.lightning:
        del commands["lightning"]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    for k in range(args.process_rounds):
        names = list(commands)
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            probe = workdir / f"probe_{name}_{k}"
            env = same_settings(args) if name != "trainlab" else None
            runs[name].append(timed_process(commands[name](k), probe, env))
    result = {}
    for name, measured in runs.items():
        result[name] = {
            key: {
                "median": statistics.median(m[key] for m in measured),
                "min": min(m[key] for m in measured),
                "max": max(m[key] for m in measured),
            }
            for key in measured[0]
        }
    base = result["handwritten"]["wall_s"]["median"]
    for entry in result.values():
        entry["wall_ratio"] = entry["wall_s"]["median"] / base
    return {"epochs": epochs, "contenders": result}


STARTUP = {
    # What any Hydra application pays before it does anything: the yardstick.
    "import hydra, omegaconf": ["-c", "import hydra, omegaconf"],
    "trainlab --help": ["-m", "trainlab", "--help"],
    "config error": ["-m", "trainlab", "optim.lr=fast"],
}


def startup_times(rounds: int) -> dict[str, dict[str, float]]:
    """Seconds to `trainlab --help` and to a config error (both import no torch), and to
    import Hydra alone, run in turn each round: medians of the wall time and of the CPU
    time (steadier on a shared machine), and their ratios to the import.

    Bytecode is written and read as in an installed package, even where the shell sets
    PYTHONDONTWRITEBYTECODE (otherwise every start compiles trainlab's sources again).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    wall: dict[str, list[float]] = {name: [] for name in STARTUP}
    cpu: dict[str, list[float]] = {name: [] for name in STARTUP}
    for round_ in range(rounds + 1):  # the first round only writes the bytecode
        for name, arguments in STARTUP.items():
            cpu_before = children_cpu_s()
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, *arguments], cwd=ROOT, env=env, capture_output=True, check=False
            )
            if round_:
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(children_cpu_s() - cpu_before)
    report = {}
    for key, measured in (("seconds", wall), ("cpu_seconds", cpu)):
        medians = {name: statistics.median(values) for name, values in measured.items()}
        base = medians["import hydra, omegaconf"]
        report[key] = medians
        report[f"{key.removesuffix('seconds')}ratio_to_import"] = {
            name: value / base for name, value in medians.items()
        }
    return report


def children_cpu_s() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------- report
def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def report_throughput(results: list[dict[str, Any]]) -> None:
    names = list(results[0]["contenders"])
    print("\nTraining throughput: samples/s, median [min-max] over rounds; ratio to sliced")
    print("| model | batch | " + " | ".join(names) + " | trainlab overhead/step |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for result in results:
        cells = []
        for name in names:
            entry = result["contenders"][name]
            cells.append(
                f"{entry['samples_per_s']:,.0f} [{entry['min']:,.0f}-{entry['max']:,.0f}] "
                f"**{entry['ratio']:.2f}x**"
            )
        overhead = result["contenders"]["trainlab"]["overhead_us_per_step"]
        print(
            f"| {result['model']} | {result['batch_size']} | "
            + " | ".join(cells)
            + f" | {overhead:+.0f} µs |"
        )
    threads = {n: results[0]["contenders"][n]["threads"] for n in names}
    print("torch threads: " + ", ".join(f"{n} {t}" for n, t in threads.items()))
    per_contender(results, "page faults per step (memory handed back to the system and taken "
                  "again):", "page_faults_per_step")  # fmt: skip
    per_contender(results, "peak memory, MB (CUDA: the most allocated on the GPU; CPU: the "
                  "process's RSS):", "peak_memory_mb")  # fmt: skip


def per_contender(results: list[dict[str, Any]], title: str, key: str) -> None:
    """One line per model and batch size: each contender's `key` (where it has one)."""
    print(title)
    for result in results:
        print(
            f"  {result['model']}, batch {result['batch_size']}: "
            + ", ".join(
                f"{name} {entry[key]:.0f}"
                for name, entry in result["contenders"].items()
                if entry[key] is not None
            )
        )


def report_process(result: dict[str, Any]) -> None:
    print(f"\nWhole process, digits MLP, {result['epochs']} epochs: median [min-max]")
    print(
        "| | wall time | ratio to hand-written | first step after launch | CPU time | peak memory |"
    )
    print("|---|---|---|---|---|---|")
    for name, entry in result["contenders"].items():
        wall, first, rss = entry["wall_s"], entry["first_step_s"], entry["peak_rss_mb"]
        print(
            f"| {name} | {wall['median']:.2f} s [{wall['min']:.2f}-{wall['max']:.2f}] | "
            f"**{entry['wall_ratio']:.2f}x** | {first['median']:.2f} s | "
            f"{entry['cpu_s']['median']:.2f} s | {rss['median']:.0f} MB |"
        )


def report_startup(startup: dict[str, dict[str, float]]) -> None:
    print("\nStart-up: median wall and CPU seconds, and their ratios to `import hydra, omegaconf`")
    for name, seconds in startup["seconds"].items():
        cpu, cpu_ratio = startup["cpu_seconds"][name], startup["cpu_ratio_to_import"][name]
        print(
            f"  {name}: {seconds:.2f} s ({startup['ratio_to_import'][name]:.2f}x), "
            f"CPU {cpu:.2f} s ({cpu_ratio:.2f}x)"
        )


def main() -> None:
    if sys.argv[1:2] == ["--launch"]:
        return launch(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--batch-sizes", default="64,512")
    parser.add_argument(
        "--rounds", type=int, help="timed rounds (epochs) each (default 5; 4 with --threads)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed first rounds")
    parser.add_argument("--samples", type=int, default=20480, help="rows of generated data")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: time rounds by the process's CPU time, for a busy machine (with "
        "OMP_NUM_THREADS=1: CPU time is then the work done); wall: what users see",
    )
    parser.add_argument("--process-rounds", type=int, default=5)
    parser.add_argument("--process-epochs", type=int, default=20)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-process", action="store_true")
    parser.add_argument(
        "--startup-only",
        action="store_true",
        help="time only the start-up (--help, a config error) against importing Hydra",
    )
    parser.add_argument(
        "--same-malloc",
        action="store_true",
        help="give the hand-written loops and Lightning the allocator settings trainlab "
        "uses (trainer.keep_freed_memory), through MALLOC_* variables: the ratios then "
        "leave out what those settings gain",
    )
    parser.add_argument(
        "--same-optimizer",
        action="store_true",
        help="give the hand-written loops and Lightning torch's fused Adam, which "
        "trainlab's configs choose (optim.fused=true): the ratios then leave out what "
        "it gains",
    )
    parser.add_argument("--no-lightning", dest="lightning", action="store_false")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=lambda text: (text.split(":", 1)[0], text.split(":", 1)[1].split()),
        metavar="NAME:OVERRIDES",
        help="another trainlab contender with these overrides (space-separated), e.g. "
        "--variant 'no-logger:logger=none'",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="instead: epoch times with trainer.num_threads=1, 2 and auto, on a quiet "
        "machine and with another process spinning on one core (--rounds, --warmup)",
    )
    parser.add_argument(
        "--thread-models",
        default="mlp-512-256,mlp,cnn,text-transformer",
        help="with --threads: among mlp-512-256, mlp, cnn, text-transformer",
    )
    parser.add_argument(
        "--limit-batches", type=int, default=10, help="with --threads: batches an epoch"
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="instead: int8 dynamic quantization (torch.ao, torchao) against fp32 on digits "
        "runs of the MLP and the RNN: size, test accuracy, latency (--rounds)",
    )
    parser.add_argument(
        "--quantize-epochs", type=int, default=10, help="with --quantize: epochs of each run"
    )
    parser.add_argument(
        "--image-folder",
        action="store_true",
        help="instead: data=image_folder's loader against a hand-written DataLoader loop "
        "(--image-count, --image-size, --image-workers, --rounds, --warmup)",
    )
    parser.add_argument("--image-count", type=int, default=4000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--image-workers", type=int, default=2)
    parser.add_argument(
        "--ddp",
        action="store_true",
        help="instead: trainlab on 2 processes against a hand-written DDP loop, DDP's "
        "per-step overhead, 2 processes x 1 thread against 1 x 2 (scripts/bench_ddp.py)",
    )
    parser.add_argument(
        "--ddp-samples",
        type=int,
        default=102400,
        help="rows of generated data for --ddp: 80 steps of 512 x 2 processes an epoch",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="instead: a generated Parquet table trained with data.streaming=true against "
        "a hand-written pyarrow-batches loop (peak memory, rows/s, preprocessing pass)",
    )
    parser.add_argument("--streaming-gb", type=float, default=2.0, help="decoded GB of the file")
    parser.add_argument(
        "--streaming-batches", type=int, default=2000, help="training batches of 512, both"
    )
    parser.add_argument("--streaming-threads", type=int, default=2, help="torch threads, both")
    parser.add_argument("--streaming-dir", default=None, help="where to write the file")
    parser.add_argument(
        "--sweeps",
        action="store_true",
        help="instead: an Optuna sweep through trainlab -m against a hand-written Optuna "
        "loop, per-trial overhead, 1 and 2 workers on one study (--sweep-trials)",
    )
    parser.add_argument("--sweep-trials", type=int, default=40, help="with --sweeps")
    parser.add_argument(
        "--sweep-epochs", type=int, default=2, help="with --sweeps: each trial's epochs"
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="instead: the server's load test (scripts/bench_serve.py; its own flags there)",
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    import bench_export

    bench_export.add_arguments(parser)
    parser.add_argument("--worker", choices=("handwritten", "lightning"), help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument(
        "--tfidf", action="store_true", help="TF-IDF text accuracy against LogisticRegression"
    )
    parser.add_argument("--tfidf-quick", action="store_true", help="--tfidf, small and short")
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--extra", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.rounds is None and not args.quantize:  # --quantize has its own default
        args.rounds = 4 if args.threads else 5
    if args.contender is not None:  # one contender of the throughput comparison
        return contender_main(args)
    if args.worker is not None:  # one process of the process comparison
        args.out.mkdir(parents=True, exist_ok=True)
        worker = handwritten_process if args.worker == "handwritten" else lightning_process
        worker(args.process_epochs, args.out)
        return

    sys.path.insert(0, str(ROOT / "src"))
    if args.lightning:
        try:
            import lightning  # noqa: F401
        except ImportError:
            print("lightning is not installed: comparing without it (pip install lightning)")
            args.lightning = False
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "same_malloc": args.same_malloc,
        "same_optimizer": args.same_optimizer,
    }
    print(f"{report['date']}, {report['machine']}")
    if args.same_malloc:
        print("the hand-written loops and Lightning run with trainlab's allocator settings")
    if args.same_optimizer:
        print("the hand-written loops and Lightning use fused Adam, as trainlab does")
    # The comparisons beside the main one, each in its own module: flag -> module[:function]
    # (the function takes these arguments; `run` by default).
    side = {
        "quantize": "bench_quantize",
        "export": "bench_export",
        "tfidf": "bench_tfidf",
        "tfidf_quick": "bench_tfidf",
        "image_folder": "bench_images",
        "ddp": "bench_ddp",
        "streaming": "bench_streaming",
        "sweeps": "bench_sweeps",
        "serve": "bench_serve:run_with_defaults",
    }
    chosen = dict.fromkeys(module for flag, module in side.items() if getattr(args, flag))
    if chosen:
        for module in chosen:
            name, _, function = module.partition(":")
            report |= getattr(importlib.import_module(name), function or "run")(args)
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
        return
    if args.threads:
        import bench_threads

        report |= bench_threads.run(args)
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
        return
    if not (args.skip_throughput or args.startup_only):
        results = []
        for model in args.models.split(","):
            for batch_size in map(int, args.batch_sizes.split(",")):
                print(f"  {model}, batch {batch_size} ...", flush=True)
                results.append(throughput(model, batch_size, args))
        report["throughput"] = results
        report_throughput(results)
    if not (args.skip_process or args.startup_only):
        report["process"] = process_times(args)
        report_process(report["process"])
    if not args.skip_process:
        report["startup"] = startup_times(args.process_rounds)
        report_startup(report["startup"])
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
