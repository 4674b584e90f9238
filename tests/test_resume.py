"""Resume: a run killed at any step and resumed ends bit for bit as the same run never
stopped, in the same folder, with one TensorBoard history.

The kill tests stop a real `train.py` process (SIGKILL, SIGTERM) while a reference run of
the same command goes on uninterrupted beside it, then compare the final checkpoints,
metrics.json and every TensorBoard scalar exactly.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import read_metrics, train_command, train_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainlab.engine.checkpoint import load_checkpoint

# Digits: 1,257 training rows in batches of 64, so 20 steps an epoch. A step checkpoint
# every 7 steps (kept as step_<N>.pt); each step slowed so a test can stop the run where
# it wants.
COMMON = (
    "trainer.max_epochs=3",
    # Fixed: `auto` measures, and the reference and the stopped run may measure differently.
    "trainer.num_threads=1",
    "callbacks.model_checkpoint.every_n_steps=7",
    "callbacks.model_checkpoint.keep_last=100",
    "+callbacks.slow._target_=custom_parts.Slowdown",
    "+callbacks.slow.seconds=0.05",
)
# Dropout draws random numbers and batch norm keeps running statistics: both must carry
# over exactly.
MLP = ("model.dropout=0.2", "model.batch_norm=true")
CNN = ("model=cnn", "model.channels=[8,16]", "model.dropout=0.2", "model.batch_norm=true")
TIMEOUT = 600  # seconds; the machine may be busy


class Run:
    """`train.py` with `args` in a background process writing under `root`."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.stderr_path = root / "stderr.txt"
        with (root / "stdout.txt").open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                train_command(*args, cwd=root), cwd=root, env=train_env(), stdout=out, stderr=err
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def finish(self) -> Path:
        """Wait for a successful end; return the run folder."""
        assert self.wait() == 0, self.stderr
        return only_run(self.root)

    def wait_for(self, name: str) -> Path:
        """Wait until the run has written `checkpoints/<name>`."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            found = list((self.root / "outputs" / "runs").glob(f"*/checkpoints/{name}"))
            if found:
                return found[0]
            assert self.process.poll() is None, f"the run ended before {name}: {self.stderr}"
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"no {name} after {TIMEOUT}s")
            time.sleep(0.005)


def only_run(root: Path) -> Path:
    (run_dir,) = (root / "outputs" / "runs").iterdir()
    return run_dir


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Nested checkpoint contents equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{index}]")
    else:
        assert a == b, where


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series as TensorBoard shows it (purged steps hidden)."""
    events = EventAccumulator(str(run_dir / "tb"), purge_orphaned_data=True)
    events.Reload()
    return {
        tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def assert_same_run(resumed: Path, reference: Path) -> None:
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(resumed / "checkpoints" / name)
        b = load_checkpoint(reference / "checkpoints" / name)
        for key in ("model", "optimizer", "position", "loop", "metrics", "callbacks", "rng"):
            assert_identical(a[key], b[key], f"{name}:{key}")
    ours, theirs = read_metrics(resumed), read_metrics(reference)
    for key in ("val", "test", "objective", "epochs", "steps", "seed"):
        assert ours[key] == theirs[key], key
    ours, theirs = scalars(resumed), scalars(reference)
    assert ours == theirs  # same steps, each once, and the same values
    assert [step for step, _ in ours["train/loss"]] == list(range(1, 61))


@pytest.fixture(scope="module")
def mlp_reference(tmp_path_factory) -> Run:
    """The MLP command run without interruption (started once, beside the first test)."""
    return Run(tmp_path_factory.mktemp("reference"), *MLP, *COMMON)


@pytest.mark.slow  # a real process killed and resumed: long; run with -m slow
def test_sigkill_mid_epoch_then_resume_from_a_checkpoint_file(tmp_path, mlp_reference) -> None:
    killed = Run(tmp_path, *MLP, *COMMON)
    killed.wait_for("step_28.pt")
    killed.process.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    run_dir = only_run(tmp_path)
    assert not (run_dir / "metrics.json").exists()
    # Resume from an older checkpoint than the newest: the event files hold steps the
    # resumed run does again (written at the step-28 save), which TensorBoard must hide.
    logged = scalars(run_dir)["train/loss"]
    assert logged[-1][0] >= 28
    start = load_checkpoint(run_dir / "checkpoints" / "step_21.pt")["position"]
    assert start == {"epoch": 1, "batch_in_epoch": 1, "global_step": 21}  # mid-epoch

    resumed = Run(tmp_path, *MLP, *COMMON, f"resume={run_dir}/checkpoints/step_21.pt")
    assert resumed.finish() == run_dir  # the same folder, no new one
    log = (run_dir / "train.log").read_text()
    assert "resuming from" in log and "settings changed" not in log
    assert_same_run(run_dir, mlp_reference.finish())


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_sigterm_stops_at_a_step_with_a_checkpoint_and_resume_auto_continues(
    tmp_path, mlp_reference
) -> None:
    stopped = Run(tmp_path, *MLP, *COMMON)
    stopped.wait_for("step_14.pt")
    stopped.process.send_signal(signal.SIGTERM)
    assert stopped.wait() == 143
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith("stopped: SIGTERM at step ") and "resume=auto" in line, line
    step = int(line.split("at step ")[1].split()[0])
    run_dir = only_run(tmp_path)
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["position"]["global_step"] == step >= 14
    assert not (run_dir / "metrics.json").exists()

    resumed = Run(tmp_path, *MLP, *COMMON, "resume=auto")
    assert resumed.finish() == run_dir
    assert_same_run(run_dir, mlp_reference.finish())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("where", ["mid_epoch", "epoch_boundary"])
def test_sigkill_anywhere_then_resume_the_folder(tmp_path, model: str, where: str) -> None:
    options = (*(MLP if model == "mlp" else CNN), *COMMON)
    if where == "epoch_boundary":  # only epoch checkpoints: last.pt first appears at step 20
        options = (*options, "callbacks.model_checkpoint.every_n_steps=null")
    reference = Run(tmp_path / "reference", *options)
    killed = Run(tmp_path / "killed", *options)
    killed.wait_for("step_28.pt" if where == "mid_epoch" else "last.pt")
    killed.process.send_signal(signal.SIGKILL)
    killed.wait()
    run_dir = only_run(killed.root)
    position = load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]
    if where == "mid_epoch":
        assert position["batch_in_epoch"] > 0, position
    else:
        assert position == {"epoch": 1, "batch_in_epoch": 0, "global_step": 20}

    assert Run(killed.root, *options, f"resume={run_dir}").finish() == run_dir
    assert_same_run(run_dir, reference.finish())
