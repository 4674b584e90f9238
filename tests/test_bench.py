"""scripts/bench.py keeps working: it runs every contender and reports every figure.

Its numbers are measurements, not assertions (see the README's Speed section); these
tests only check that a small run produces complete, sane reports.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, cli_env


def bench(tmp_path, *arguments: str) -> dict:
    report = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "scripts/bench.py", "--no-lightning", "--json", str(report), *arguments],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(report.read_text()) | {"printed": result.stdout}


@pytest.mark.slow  # a benchmark run: six processes, each importing torch
def test_throughput_of_every_contender(tmp_path) -> None:
    report = bench(
        tmp_path,
        *("--models", "mlp", "--batch-sizes", "64", "--samples", "2560", "--rounds", "2"),
        *("--skip-process", "--variant", "bare:logger=none callbacks=none"),
        *("--device", "cpu"),  # threads and RSS are CPU figures; a GPU host would pick cuda
    )
    (result,) = report["throughput"]
    assert (result["model"], result["batch_size"], result["train_samples"]) == ("mlp", 64, 2048)
    assert set(result["contenders"]) == {"trainlab", "trainlab bare", "sliced", "dataloader"}
    for entry in result["contenders"].values():
        assert entry["min"] <= entry["samples_per_s"] <= entry["max"]
        assert entry["samples_per_s"] > 0 and entry["peak_memory_mb"] > 50  # no speed bar
    assert result["contenders"]["sliced"]["ratio"] == 1.0
    assert result["contenders"]["trainlab"]["threads"] >= 1  # measured (trainer.num_threads)
    assert "| mlp | 64 |" in report["printed"]


@pytest.mark.slow
def test_process_times_and_start_up(tmp_path) -> None:
    report = bench(tmp_path, "--skip-throughput", "--process-rounds", "1", "--process-epochs", "2")
    contenders = report["process"]["contenders"]
    assert set(contenders) == {"trainlab", "handwritten"}
    for entry in contenders.values():
        assert 0 < entry["first_step_s"]["median"] < entry["wall_s"]["median"]
        assert entry["peak_rss_mb"]["median"] > 100
    assert contenders["handwritten"]["wall_ratio"] == 1.0
    names = {"import hydra, omegaconf", "trainlab --help", "config error"}
    assert set(report["startup"]["seconds"]) == names
    assert report["startup"]["ratio_to_import"]["import hydra, omegaconf"] == 1.0


@pytest.mark.slow  # a benchmark run: six processes, each importing torch
def test_the_sweep_bench_reports_every_contender(tmp_path) -> None:
    report = bench(tmp_path, "--sweeps", "--sweep-trials", "3", "--sweep-epochs", "1")
    result = report["sweeps"]
    assert (result["trials"], result["epochs"]) == (3, 1)
    for name in (
        "handwritten",
        "trainlab",
        "trainlab_quiet",
        "trainlab_2_workers",
        "trainlab_workers_2",
    ):
        assert result[name]["trials"] == 3 and result[name]["seconds"] > 0, name
    # The hand-written loop is a process of its own, timed from launch: its imports count.
    assert result["handwritten"]["seconds"] > 3 * result["handwritten"]["trial_s"]
    assert 0 < result["ratio"] < 10
    assert result["trainlab"]["startup_s"] > 0 and result["trainlab"]["job_s"] > 0
    assert "per-trial overhead of trainlab -m" in report["printed"]
