"""What keeps trainlab fast, checked for behaviour (timings live in scripts/bench.py):
no torch import before a config is valid, the quick exit (the thread choice: test_threads.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SMOKE, cli_env, compose_config, read_metrics
from torch import nn

from trainlab.components.models import MLP
from trainlab.components.optim import build_optimizer
from trainlab.engine.runtime import keep_freed_memory


def imported_modules(*arguments: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules `python train.py ARGUMENTS` imports, from `python -X importtime`."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "train.py", *arguments],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return modules, result


@pytest.mark.parametrize("arguments", [["--help"], ["optim.lr=fast"], ["model=mlpp"]])
def test_help_and_config_errors_do_not_import_torch(arguments) -> None:
    modules, result = imported_modules(*arguments)
    assert "trainlab.app.cli" in modules  # the measurement works
    assert "torch" not in modules
    assert result.returncode == (0 if arguments == ["--help"] else 2)


@pytest.mark.slow  # over the default suite's time budget: runs with -m slow
def test_a_finished_run_exits_with_everything_written(tmp_path) -> None:
    """train.py leaves without the interpreter's teardown: nothing may be lost by it."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "train.py", *SMOKE, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "objective val/acc" in result.stdout + result.stderr  # the console has the end
    log = (run_dir / "train.log").read_text()
    assert log.rstrip().splitlines()[-1].startswith("objective val/acc")
    assert read_metrics(run_dir)["steps"] == 3
    for name in ("last.pt", "best.pt"):
        payload = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert payload["position"]["global_step"] == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert [s.step for s in events.Scalars("train/loss")] == [1, 2, 3]
    assert len(events.Scalars("test/acc")) == 1


@pytest.mark.slow  # a whole run under cProfile: long; run with -m slow
def test_a_profiled_run_still_writes_its_profile(tmp_path) -> None:
    """Under a profiler (or coverage) the orderly exit stays: they write at exit."""
    profile = tmp_path / "run.prof"
    result = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), "train.py", *SMOKE,
         f"hydra.run.dir={tmp_path / 'run'}", "logger=none", "callbacks=none"],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import pstats

    assert pstats.Stats(str(profile)).total_calls > 1000
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 3


# Training a CNN at batch 512 in a process of its own: page faults per step once warm
# (the quietest of four windows of ten steps).
PAGE_FAULTS_PER_STEP = """
import resource, sys, torch
from trainlab.components.models import CNN
from trainlab.engine.runtime import keep_freed_memory
print(keep_freed_memory(sys.argv[1] == "keep"))
torch.manual_seed(0)
net = CNN((1, 8, 8), 10, channels=(32, 64))
optimizer = torch.optim.Adam(net.parameters())
x, y = torch.randn(512, 1, 8, 8), torch.randint(0, 10, (512,))
def train(steps):
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
train(30)
windows = []
for _ in range(4):  # a one-off growth of the heap shows in one window, a recurring fault in all
    before = faults()
    train(10)
    windows.append((faults() - before) / 10)
print(min(windows))
"""


def page_faults_per_step(setting: str, **env: str) -> tuple[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", PAGE_FAULTS_PER_STEP, setting],
        env={k: v for k, v in cli_env().items() if not k.startswith("MALLOC_")} | env,
        capture_output=True,
        text=True,
        check=True,
    )
    said, faults = result.stdout.splitlines()
    return said, float(faults)


def test_keep_freed_memory_leaves_a_users_allocator_settings_alone(monkeypatch) -> None:
    """What the setting does, by branch (its effect on page faults is measured by
    scripts/bench.py and by the slow test below)."""
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    for name in [n for n in os.environ if n.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    assert keep_freed_memory(False) is None
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory(True) == "left to the MALLOC_* environment variables"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert keep_freed_memory(True) == (
        "left to the allocator in LD_PRELOAD (/usr/lib/libjemalloc.so.2)"
    )


@pytest.mark.slow  # an allocator measurement: three processes training a CNN
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_the_next_step() -> None:
    """glibc hands freed tensor memory back to the system in some processes, not others,
    and those take a page fault per 4 KiB page each step (up to 30% slower, scripts/bench.py).
    trainer.keep_freed_memory=true ends that: a warm step takes next to no page faults
    (a 4 MB activation alone is ~1,000 pages)."""
    said, faults = page_faults_per_step("keep")
    assert said == "freed blocks up to 32 MiB kept for reuse (glibc)"
    assert faults < 20
    said, _ = page_faults_per_step("off")
    assert said == "None"
    # Settings of the user's own are left alone.
    said, _ = page_faults_per_step("keep", MALLOC_ARENA_MAX="2")
    assert said == "left to the MALLOC_* environment variables"


def test_the_test_confusion_matrix_image_has_a_cell_per_pair_of_classes() -> None:
    from trainlab.components.callbacks.figures import confusion_image

    matrix = torch.tensor([[9, 1, 0], [0, 10, 0], [2, 0, 8]])
    image = confusion_image(matrix, ["cat", "dog", "bird"])
    assert image.dtype.name == "uint8"
    assert image.ndim == 3 and image.shape[2] == 3
    larger = confusion_image(torch.eye(6, dtype=torch.long) * 5, [str(i) for i in range(6)])
    assert larger.shape[0] > image.shape[0] and larger.shape[1] > image.shape[1]
    # The dog row is all on the diagonal: the darkest cell; the empty cat->bird cell is white.
    pixels = image.reshape(-1, 3)
    assert (pixels == [8, 48, 107]).all(axis=1).any()
    assert (pixels == [255, 255, 255]).all(axis=1).mean() > 0.3


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_take_the_fused_step_with_the_same_update(name: str) -> None:
    def trained(*overrides: str) -> tuple[torch.optim.Optimizer, torch.Tensor]:
        torch.manual_seed(0)
        model = MLP((8,), 3, hidden_sizes=[32, 32])
        momentum = ["optim.momentum=0.9"] if name == "sgd" else []
        optim_cfg = compose_config(f"optim={name}", *momentum, *overrides)
        optimizer = build_optimizer(optim_cfg.optim, model)
        generator = torch.Generator().manual_seed(1)
        for _ in range(50):
            inputs = torch.randn(16, 8, generator=generator)
            targets = torch.randint(0, 3, (16,), generator=generator)
            loss = nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return optimizer, torch.cat([p.detach().flatten() for p in model.parameters()])

    fused, fused_weights = trained()
    looped, looped_weights = trained("optim.fused=false")
    assert fused.defaults["fused"] is True and not looped.defaults["fused"]
    # The same update computed in another order: equal to float32 rounding.
    assert (fused_weights - looped_weights).abs().max() < 1e-5


def test_a_resumed_optimizer_keeps_the_implementation_it_was_saved_with() -> None:
    # A checkpoint from before optim.fused (or with optim.fused=false) resumes on the
    # per-tensor loop, so the resumed run continues exactly as it would have.
    model = MLP((8,), 3, hidden_sizes=[16])
    looped = build_optimizer(compose_config("optim.fused=false").optim, model)
    model(torch.randn(4, 8)).sum().backward()
    looped.step()
    fused = build_optimizer(compose_config().optim, model)
    assert fused.param_groups[0]["fused"] is True
    fused.load_state_dict(looped.state_dict())
    assert not fused.param_groups[0]["fused"]
