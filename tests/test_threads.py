"""`trainer.num_threads=auto` measures: it picks among the counts it may, says what it
measured, touches nothing of the run, and a run with it is the run with the chosen count.

No timing is asserted here (the timings are the benchmark's: `scripts/bench.py --threads`).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SMOKE, cli_env, compose_config, read_metrics
from torch import nn

from trainlab.app.config import validate
from trainlab.app.experiment import cpu_threads
from trainlab.engine import threads
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.engine.threads import (
    available_cores,
    candidates,
    choose_threads,
    fastest,
    time_steps,
    training_step,
)

MEASURED = re.compile(r"measured: 1 → [\d.]+ ms/step(, \d+ → [\d.]+ ms/step)+")


def small_run() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, tuple]:
    """A model with dropout and batch norm (random draws, running statistics) and an Adam
    that has already stepped once (state to keep)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    batch = (torch.randn(16, 8), torch.randint(0, 3, (16,)))
    loss_fn(model(batch[0]), batch[1]).backward()
    optimizer.step()
    return model, optimizer, loss_fn, batch


@pytest.mark.parametrize(
    ("cores", "expected"),
    [
        (1, [1]),
        (2, [1, 2]),
        (3, [1, 2, 3]),
        (4, [1, 2, 4]),
        (6, [1, 2, 4, 6]),
        (16, [1, 2, 4, 8, 16]),
    ],
)
def test_candidates_double_up_to_the_cores(cores, expected) -> None:
    assert candidates(cores) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ({1: 0.010, 2: 0.005}, 2),
        ({1: 0.010, 2: 0.0097}, 1),  # within 5%: the fewer threads
        ({1: 0.010, 2: 0.0104}, 1),
        ({1: 0.010, 2: 0.006, 4: 0.0058}, 2),
        ({1: 0.010, 2: 0.008, 4: 0.004}, 4),
    ],
)
def test_the_fastest_count_wins_and_ties_go_to_fewer_threads(seconds, expected) -> None:
    assert fastest(seconds) == expected


def test_cores_are_shared_with_the_other_processes_of_a_run(monkeypatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores = available_cores()
    assert 1 <= cores <= threads.DEFAULT_THREADS
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes of a torchrun run
    assert available_cores() == max(cores // 2, 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 4))
    assert available_cores() == 1  # never fewer than one


def test_measuring_times_every_candidate_and_leaves_torch_as_it_was() -> None:
    model, optimizer, loss_fn, batch = small_run()
    threads_before, rng_before = torch.get_num_threads(), torch.get_rng_state()
    seconds = time_steps(training_step(model, optimizer, loss_fn, batch), [1, 2])
    assert sorted(seconds) == [1, 2]
    assert all(value > 0 for value in seconds.values())
    assert torch.get_num_threads() == threads_before
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_measuring_leaves_the_model_and_optimizer_untouched() -> None:
    model, optimizer, loss_fn, batch = small_run()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {
        index: {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
        for index, state in optimizer.state_dict()["state"].items()
    }
    grads = [p.grad.clone() for p in model.parameters()]
    model.eval()
    step = training_step(model, optimizer, loss_fn, batch)
    time_steps(step, [1, 2])
    assert not model.training  # the copy trained, not the model
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    saved = optimizer.state_dict()["state"]
    for index, state in moments.items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(saved[index][key]), torch.as_tensor(value))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))


def test_auto_picks_a_candidate_and_says_what_it_measured(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    model, optimizer, loss_fn, batch = small_run()
    count, why = choose_threads("auto", model, optimizer, loss_fn, batch)
    assert count in candidates(available_cores())
    if available_cores() == 1:
        assert why == "one core"
    else:
        assert MEASURED.fullmatch(why), why
        shown = [int(n) for n in re.findall(r"(\d+) → ", why)]
        assert shown == candidates(available_cores())
    assert choose_threads(3, model, optimizer, loss_fn, batch) == (3, "trainer.num_threads=3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads("auto", model, optimizer, loss_fn, batch) == (
        threads.DEFAULT_THREADS,
        "OMP_NUM_THREADS=2",
    )


@pytest.mark.skipif(available_cores() < 2, reason="one core: nothing to measure")
def test_a_run_built_again_in_the_process_keeps_the_count_without_measuring(
    monkeypatch,
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    threads.MEASURED.clear()
    model, optimizer, loss_fn, batch = small_run()
    first = choose_threads("auto", model, optimizer, loss_fn, batch)
    assert len(threads.MEASURED) == 1
    again, _, _, _ = small_run()  # the same layers, other weights: the same work
    count, why = choose_threads("auto", again, optimizer, loss_fn, batch)
    assert count == first[0]
    assert why == first[1].replace("measured:", "measured earlier in this process:")
    wider = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3))
    wider_optimizer = torch.optim.Adam(wider.parameters())
    choose_threads("auto", wider, wider_optimizer, loss_fn, batch)
    half = (batch[0][:8], batch[1][:8])
    choose_threads("auto", model, optimizer, loss_fn, half)
    assert len(threads.MEASURED) == 3  # other layers, another batch size: measured anew


def test_one_available_core_is_not_measured(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1000")  # a thousand processes share the cores
    model, optimizer, loss_fn, batch = small_run()
    assert choose_threads("auto", model, optimizer, loss_fn, batch) == (1, "one core")


def test_a_resumed_auto_run_keeps_the_count_it_began_with(tmp_path) -> None:
    cfg = compose_config("trainer.device=cpu", output_dir=tmp_path)
    trainer_cfg = validate(cfg)["trainer"]
    model, optimizer, loss_fn, _ = small_run()
    resumed = {"config": {"trainer": {"num_threads": 7}}}
    assert cpu_threads(trainer_cfg, resumed, model, optimizer, loss_fn, None) == (
        7,
        "the count the resumed run began with",
    )


def start_line(caplog: pytest.LogCaptureFixture) -> str:
    """The run's start line, from what the last run logged."""
    line = next(r.getMessage() for r in caplog.records if "CPU thread" in r.getMessage())
    caplog.clear()
    return line


def test_an_auto_run_is_bitwise_the_run_with_the_chosen_count(
    run_experiment, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="trainlab")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads_before = torch.get_num_threads()
    overrides = (*SMOKE, "trainer.device=cpu", "trainer.max_epochs=2", "callbacks.figures=null")
    try:
        _, auto_dir = run_experiment(*overrides)
        saved = load_checkpoint(auto_dir / "checkpoints" / "last.pt", map_location="cpu")
        count = saved["config"]["trainer"]["num_threads"]  # the resolved count is kept
        assert count in candidates(available_cores())
        line = start_line(caplog)
        if available_cores() > 1:
            assert re.search(rf"{count} CPU threads? \({MEASURED.pattern}\)", line), line
        _, fixed_dir = run_experiment(*overrides, f"trainer.num_threads={count}")
    finally:
        torch.set_num_threads(threads_before)
    assert f"({'trainer.num_threads=' + str(count)})" in start_line(caplog)
    fixed = load_checkpoint(fixed_dir / "checkpoints" / "last.pt", map_location="cpu")
    assert saved["model"].keys() == fixed["model"].keys()
    assert all(torch.equal(saved["model"][k], fixed["model"][k]) for k in saved["model"])
    auto_metrics, fixed_metrics = read_metrics(auto_dir), read_metrics(fixed_dir)
    for split in ("val", "test"):
        assert auto_metrics[split] == fixed_metrics[split]


def test_cross_validation_measures_once_and_every_fold_uses_that_count(
    run_experiment, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="trainlab")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads.MEASURED.clear()
    threads_before = torch.get_num_threads()
    try:
        _, run_dir = run_experiment(
            *SMOKE, "trainer.device=cpu", "cv.folds=3", "callbacks.figures=null"
        )
    finally:
        torch.set_num_threads(threads_before)
    counts = [
        load_checkpoint(run_dir / f"fold_{k}" / "checkpoints" / "last.pt", map_location="cpu")[
            "config"
        ]["trainer"]["num_threads"]
        for k in range(3)
    ]
    assert len(set(counts)) == 1
    starts = [r.getMessage() for r in caplog.records if "CPU thread" in r.getMessage()]
    assert len(starts) == 3
    if available_cores() > 1:
        assert "(measured: " in starts[0]
        assert all("(measured earlier in this process: " in line for line in starts[1:])


@pytest.mark.slow  # a benchmark run: two processes, each importing torch
def test_the_benchmark_compares_auto_with_one_and_two_threads(tmp_path) -> None:
    report = tmp_path / "bench.json"
    arguments = ("--threads", "--thread-models", "mlp", "--rounds", "1", "--warmup", "0")
    arguments += ("--limit-batches", "2", "--json", str(report))
    result = subprocess.run(
        [sys.executable, "scripts/bench.py", "--no-lightning", *arguments],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(report.read_text())["threads"]
    assert [(row["model"], row["condition"]) for row in rows] == [("mlp", "quiet"), ("mlp", "busy")]
    for row in rows:
        settings = row["settings"]
        assert [settings[name]["threads"] for name in ("1", "2")] == [1, 2]
        assert settings["auto"]["threads"] in candidates(available_cores())
        assert all(len(setting["epoch_s"]) == 1 for setting in settings.values())
        best = min(settings["1"]["median_s"], settings["2"]["median_s"])
        assert row["auto_over_best"] == settings["auto"]["median_s"] / best
    assert "| mlp | busy |" in result.stdout


def test_a_resumed_run_trains_with_the_count_it_began_with(
    run_experiment, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="trainlab")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads_before = torch.get_num_threads()
    overrides = (*SMOKE, "trainer.device=cpu", "callbacks.figures=null")
    try:
        _, first = run_experiment(*overrides)
        last = first / "checkpoints" / "last.pt"
        count = load_checkpoint(last, map_location="cpu")["config"]["trainer"]["num_threads"]
        (first / "metrics.json").unlink()  # as if stopped after its first epoch
        caplog.clear()
        run_experiment(*overrides, "trainer.max_epochs=2", f"resume={last}")
    finally:
        torch.set_num_threads(threads_before)
    line = start_line(caplog)
    assert f"{count} CPU thread{'s' * (count > 1)} (the count the resumed run began with)" in line
    assert "num_threads" not in caplog.text  # not reported as a changed setting
