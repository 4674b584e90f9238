"""Runs on two processes, as a user starts them (torchrun, `trainer.devices=2`, two
torchrun "nodes"), and what ends them: SIGKILL and SIGTERM of the whole job (resumed bit
for bit), an exception, a kill or a NaN in one rank, mismatched processes.

Every test starts real processes: all are slow (a minute or two each on a busy 2-core host).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, cli_env

from trainlab.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

# Two epochs of four steps on 2 processes, a checkpoint every step; the fault part is in
# every command (its environment variable decides), so resume=auto finds the run.
COMMAND = (
    "debug=fast",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "callbacks.model_checkpoint.every_n_steps=1",
    "+callbacks.fault._target_=ddp_fault_parts.RankFault",
)
TIMEOUT = 600  # never a hang: a run that does not end fails the test


def devices_run(cwd: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """`train.py trainer.devices=2 ARGS` in its own session (a job SLURM could signal)."""
    env = cli_env() | ({"TRAINLAB_TEST_RANK_FAULT": fault} if fault else {})
    command = [sys.executable, str(ROOT / "train.py"), "trainer.devices=2", *args]
    return subprocess.run(
        [*command, f"paths.root_dir={cwd / 'outputs'}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        start_new_session=True,
    )


def torchrun(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", *args]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=cli_env() | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def runs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "runs").iterdir())


def one_error_line(result: subprocess.CompletedProcess, words: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def final_state(folder: Path) -> tuple[dict, dict]:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("wall_time_s"), metrics.pop("best_checkpoint")  # when, and which folder
    return load_checkpoint(folder / "checkpoints" / "last.pt")["model"], metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, dict]:
    cwd = tmp_path_factory.mktemp("reference")
    result = devices_run(cwd, *COMMAND)
    assert result.returncode == 0, result.stderr
    (folder,) = runs(cwd)
    return final_state(folder)


def test_torchrun_two_processes_make_one_run_folder_and_say_so(tmp_path) -> None:
    """The bar: `torchrun --nproc_per_node=2 train.py trainer.max_epochs=2`."""
    root = f"paths.root_dir={tmp_path / 'outputs'}"
    job = torchrun(
        tmp_path, "--nproc_per_node=2", str(ROOT / "train.py"), "trainer.max_epochs=2", root
    )
    _, err = job.communicate(timeout=TIMEOUT)
    assert job.returncode == 0, err
    (folder,) = runs(tmp_path)
    log = (folder / "train.log").read_text()
    assert "2 processes (gloo), global batch 128 = data.batch_size 64 x 2 processes" in log
    assert log.count("epoch 2/2") == 1  # rank 1 writes nothing
    assert len(list((folder / "tb").glob("events.out.tfevents*"))) == 1
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["test"]["test/acc"] > 0.8


@pytest.mark.parametrize("stop", ["killjob", "termjob", "term"])
def test_a_job_killed_or_stopped_mid_epoch_resumes_bit_for_bit(tmp_path, reference, stop) -> None:
    """SIGKILL / SIGTERM to every process of the job, or SIGTERM to rank 0 alone, at step 6
    (epoch 2); then resume=auto. A stop is agreed by a vote read one step later, so every
    rank stops after step 7."""
    stopped = devices_run(tmp_path, *COMMAND, fault=f"0:6:{stop}")
    (folder,) = runs(tmp_path)
    assert not (folder / "metrics.json").exists()
    if stop != "killjob":  # every rank stops at the same step, one checkpoint, status 143
        assert stopped.returncode == 143, stopped.stderr
        line = one_error_line(stopped, "stopped: SIGTERM at step 7 (epoch 2); saved ")
        assert line.endswith("to continue, run the same command with resume=auto")
        assert load_checkpoint(folder / "checkpoints" / "last.pt")["position"]["global_step"] == 7
    else:
        assert stopped.returncode == -signal.SIGKILL
    resumed = devices_run(tmp_path, *COMMAND, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr
    assert runs(tmp_path) == [folder]
    weights, metrics = final_state(folder)
    assert metrics == reference[1]
    assert weights.keys() == reference[0].keys()
    assert all(torch.equal(weights[k], reference[0][k]) for k in weights)


@pytest.mark.parametrize(
    ("fault", "status", "words"),
    [
        ("1:3:raise", 2, "error: ValueError: injected fault on rank 1 at step 3"),
        ("1:3:kill", 137, "error: process 1 of 2 was killed (SIGKILL), so the run stopped"),
        ("1:3:nan", 2, "error: training diverged: the loss is nan at step 4 (epoch 1)"),
    ],
)
def test_a_fault_in_one_rank_ends_the_job_with_its_one_line(tmp_path, fault, status, words):
    result = devices_run(tmp_path, *COMMAND, fault=fault)
    assert result.returncode == status, result.stderr
    one_error_line(result, words)


def test_a_checkpoint_of_two_processes_is_refused_by_one(tmp_path, reference) -> None:
    stopped = devices_run(tmp_path, *COMMAND, fault="0:3:term")
    assert stopped.returncode == 143
    (folder,) = runs(tmp_path)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    command = [sys.executable, str(ROOT / "train.py"), *COMMAND, f"resume={folder}"]
    alone = subprocess.run(
        command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert alone.returncode == 2
    one_error_line(
        alone, "it was written by a run on 2 process(es) and this one has 1; resume with 2"
    )
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_processes_with_different_configs_are_refused(tmp_path) -> None:
    root = f"paths.root_dir={tmp_path / 'outputs'}"
    seed = "name=${oc.env:RANK}"  # a different run name on each rank
    job = torchrun(tmp_path, "--nproc_per_node=2", str(ROOT / "train.py"), "debug=fast", seed, root)
    _, err = job.communicate(timeout=TIMEOUT)
    assert job.returncode != 0
    assert "error: the processes of this run have different configs (rank 1 differs" in err
    assert "Traceback" not in err.split("error: the processes")[1].split("\n")[0]
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (folder / "metrics.json").exists() for folder in runs(tmp_path)
    )


def test_two_nodes_meet_through_torchruns_rendezvous(tmp_path) -> None:
    """Two torchrun agents, one process each, as two nodes of one job would run them."""
    from test_ddp import free_port

    endpoint = f"127.0.0.1:{free_port()}"
    root = f"paths.root_dir={tmp_path / 'outputs'}"
    nodes = [
        torchrun(
            tmp_path,
            "--nnodes=2",
            "--nproc_per_node=1",
            f"--node_rank={node}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={endpoint}",
            "--rdzv_id=two-nodes",
            str(ROOT / "train.py"),
            "debug=fast",
            root,
        )
        for node in range(2)
    ]
    for node in nodes:
        node.communicate(timeout=TIMEOUT)
        assert node.returncode == 0
    (folder,) = runs(tmp_path)
    assert "2 processes (gloo)" in (folder / "train.log").read_text()
    assert (folder / "metrics.json").is_file()


def test_fsdp_trains_as_ddp_and_its_run_folder_predicts(tmp_path, reference) -> None:
    """trainer.strategy=fsdp on CPU with gloo: the metrics of the DDP run (float sums in
    another order), a stop and resume=auto, and a checkpoint predict reads."""
    import numpy as np
    from sklearn.datasets import load_digits

    stopped = devices_run(tmp_path, *COMMAND, "trainer.strategy=fsdp", fault="0:6:termjob")
    assert stopped.returncode == 143, stopped.stderr
    resumed = devices_run(tmp_path, *COMMAND, "trainer.strategy=fsdp", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr
    (folder,) = runs(tmp_path)
    weights, metrics = final_state(folder)
    for split in ("val", "test"):
        for name, value in metrics[split].items():
            assert value == pytest.approx(reference[1][split][name], abs=1e-5), name
    assert all(torch.allclose(weights[k], reference[0][k], atol=1e-5) for k in weights)
    np.save(tmp_path / "x.npy", load_digits().data[:5].astype("float32"))
    command = [sys.executable, str(ROOT / "predict.py"), f"run={folder}", "input=x.npy"]
    predicted = subprocess.run(
        [*command, "output=p.csv"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert predicted.returncode == 0, predicted.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 6


def test_fsdp_accumulating_gradients_trains_as_ddp_does(tmp_path) -> None:
    """trainer.accumulate_grad_batches=2: DDP skips its all-reduce and FSDP defers its
    reduce-scatter on the first batch of each step; both end at the same weights."""
    finals = []
    for strategy in ("ddp", "fsdp"):
        cwd = tmp_path / strategy
        cwd.mkdir()
        done = devices_run(
            cwd, *COMMAND, f"trainer.strategy={strategy}", "trainer.accumulate_grad_batches=2"
        )
        assert done.returncode == 0, done.stderr
        (folder,) = runs(cwd)
        finals.append(final_state(folder))
    (ddp_weights, ddp_metrics), (fsdp_weights, fsdp_metrics) = finals
    assert ddp_metrics["steps"] == fsdp_metrics["steps"] == 2 * 2  # 4 batches a epoch, 2 a step
    for split in ("val", "test"):
        for name, value in fsdp_metrics[split].items():
            assert value == pytest.approx(ddp_metrics[split][name], abs=1e-5), name
    assert all(torch.allclose(fsdp_weights[k], ddp_weights[k], atol=1e-5) for k in ddp_weights)
