"""End-to-end runs: TensorBoard contents, checkpoints, metrics.json, seeding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import SMOKE, read_metrics
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainlab.components.data.datasets import DataInfo
from trainlab.engine.checkpoint import load_checkpoint, save_checkpoint
from trainlab.errors import TrainlabError

EPOCH_TAGS = ["val/loss", "val/acc", "val/precision", "val/recall", "val/f1", "val/auroc"]
TEST_TAGS = [tag.replace("val/", "test/") for tag in EPOCH_TAGS]


def test_tensorboard_holds_every_tag_with_finite_values(run_experiment) -> None:
    _, run_dir = run_experiment("trainer.max_epochs=3", "callbacks.early_stopping=null")
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    metrics = read_metrics(run_dir)
    steps = metrics["steps"]
    assert steps == 3 * math.ceil(1257 / 64)  # digits: 1,257 training rows, batch 64

    assert [s.step for s in events.Scalars("train/loss")] == list(range(1, steps + 1))
    per_epoch = steps // 3
    # A constant rate: the first step and each epoch's last, not one equal value per step.
    rates = events.Scalars("train/lr")
    assert [s.step for s in rates] == [1, per_epoch, 2 * per_epoch, steps]
    assert all(s.value == pytest.approx(1e-3) for s in rates)
    for tag in EPOCH_TAGS:  # after each epoch, on the same step axis as train/loss
        assert [s.step for s in events.Scalars(tag)] == [per_epoch, 2 * per_epoch, steps], tag
    assert [s.value for s in events.Scalars("train/epoch")] == [0, 1, 2]
    for tag in TEST_TAGS:
        (scalar,) = events.Scalars(tag)
        assert scalar.value == pytest.approx(metrics["test"][tag], rel=1e-6)
    values = [s.value for tag in events.Tags()["scalars"] for s in events.Scalars(tag)]
    assert all(math.isfinite(v) for v in values)
    # Training lowers the loss, and the HParams tab has this run.
    losses = [s.value for s in events.Scalars("train/loss")]
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_learning_rate_logged_where_it_changes(run_experiment) -> None:
    """A per-step schedule logs every step; a per-epoch one each change and epoch end."""
    _, run_dir = run_experiment("trainer.max_epochs=2", "sched=cosine", "sched.warmup_epochs=0")
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    steps = read_metrics(run_dir)["steps"]
    rates = events.Scalars("train/lr")
    assert [s.step for s in rates] == list(range(1, steps + 1))
    assert rates[0].value == pytest.approx(1e-3)
    assert all(a.value > b.value for a, b in itertools.pairwise(rates))  # cosine decays

    _, run_dir = run_experiment(
        "trainer.max_epochs=4", "sched=step", "sched.step_size=2", "sched.gamma=0.1"
    )
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    per_epoch = read_metrics(run_dir)["steps"] // 4
    logged = [(s.step, round(s.value, 10)) for s in events.Scalars("train/lr")]
    assert logged == [
        (1, 1e-3),
        (per_epoch, 1e-3),
        (2 * per_epoch, 1e-3),
        (2 * per_epoch + 1, 1e-4),  # stepped after epoch 2
        (3 * per_epoch, 1e-4),
        (4 * per_epoch, 1e-4),
    ]


def test_tensorboard_figures(run_experiment) -> None:
    def tags(run_dir):
        events = EventAccumulator(
            str(run_dir / "tb"), size_guidance={"images": 0, "tensors": 0, "histograms": 0}
        )
        events.Reload()
        return events

    # A user's callback that takes data_info gets the DataInfo, as the figures do theirs.
    from custom_parts import KeepsDataInfo  # tests/ is on the path, as for conftest

    KeepsDataInfo.given.clear()
    _, run_dir = run_experiment(
        "trainer.max_epochs=2", "callbacks.figures.histograms=true",
        "+callbacks.keep._target_=custom_parts.KeepsDataInfo", "+callbacks.keep.label=mine",
    )  # fmt: skip
    [(label, info)] = KeepsDataInfo.given
    assert label == "mine" and isinstance(info, DataInfo)
    assert info.class_names == [str(digit) for digit in range(10)]
    events = tags(run_dir)
    assert [i.step for i in events.Images("val/confusion_matrix")] == [20, 40]
    assert len(events.Images("test/confusion_matrix")) == 1
    assert {f"test/pr_curve/{digit}" for digit in range(10)} <= set(events.Tags()["tensors"])
    assert "weight/layers.1.weight" in events.Tags()["histograms"]
    assert "grad/layers.1.weight" in events.Tags()["histograms"]
    assert events.Tags()["graph"]

    _, run_dir = run_experiment("data=diabetes", "loss=mse", "trainer.max_epochs=1")
    assert tags(run_dir).Tags()["images"] == ["test/predicted_vs_true"]
    _, run_dir = run_experiment("data=breast_cancer", "loss=bce", "trainer.max_epochs=1")
    assert "test/pr_curve" in tags(run_dir).Tags()["tensors"]


def test_checkpoint_holds_everything_needed_to_continue(run_experiment) -> None:
    _, run_dir = run_experiment("sched=cosine", "trainer.max_epochs=2")
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert {
        "model",
        "optimizer",
        "scheduler",
        "position",
        "rng",
        "callbacks",
        "config",
        "metrics",
        "format",
        "version",
        "scaler",
        "loop",
    } <= set(last)
    assert last["position"] == {"epoch": 2, "batch_in_epoch": 0, "global_step": 2 * 20}
    assert last["loop"]["should_stop"] is False and last["loop"]["epoch_batches"] == 20
    assert last["optimizer"]["state"]  # Adam moments are saved
    assert last["scheduler"]["last_epoch"] == 40
    (stopping,) = [v for k, v in last["callbacks"].items() if k.startswith("EarlyStopping{")]
    assert stopping["best"] == pytest.approx(last["metrics"]["val/loss"])
    assert last["config"]["model"]["hidden_sizes"] == [256, 128]
    assert set(last["rng"]) == {"python", "numpy", "torch", "cuda"}

    # The best checkpoint is the one tested, and its weights reproduce its val accuracy.
    metrics = read_metrics(run_dir)
    best = load_checkpoint(metrics["best_checkpoint"])
    assert best["metrics"]["val/acc"] == pytest.approx(metrics["objective"]["value"], abs=1e-6)


def test_checkpoint_loader_refuses_foreign_files(tmp_path) -> None:
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(TrainlabError, match="not a trainlab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(TrainlabError, match="not a readable trainlab checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(TrainlabError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_save_replaces_atomically(tmp_path) -> None:
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary files left


def test_same_seed_same_numbers_and_seed_zero_is_a_seed(run_experiment) -> None:
    runs = [run_experiment("trainer.max_epochs=2", f"seed={seed}") for seed in (0, 0, 1)]
    (_, a), (_, b), (_, c) = runs
    assert read_metrics(a)["test"] == read_metrics(b)["test"]
    wa = load_checkpoint(a / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(b / "checkpoints" / "last.pt")["model"]
    wc = load_checkpoint(c / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert read_metrics(a)["seed"] == 0


def test_null_seed_is_drawn_and_recorded(run_experiment) -> None:
    _, run_dir = run_experiment("seed=null", *SMOKE)
    seed = read_metrics(run_dir)["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**31
    _, again = run_experiment(f"seed={seed}", *SMOKE)
    assert read_metrics(again)["test"] == read_metrics(run_dir)["test"]


def test_early_stopping_ends_the_run_and_best_checkpoint_is_tested(run_experiment) -> None:
    _, run_dir = run_experiment(
        "trainer.max_epochs=50",
        "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.monitor=val/acc",
        "callbacks.early_stopping.min_delta=0.05",
    )
    metrics = read_metrics(run_dir)
    assert metrics["epochs"] < 50
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert best["metrics"]["val/acc"] >= last["metrics"]["val/acc"]
    assert metrics["objective"]["value"] == pytest.approx(best["metrics"]["val/acc"], abs=1e-6)


def test_synthetic_data_and_full_batch_gradient_descent(run_experiment) -> None:
    objective, run_dir = run_experiment(
        "data=synthetic",
        "data.batch_size=full",
        "optim=sgd",
        "optim.lr=0.5",
        "trainer.max_epochs=40",
        "callbacks.early_stopping=null",
    )
    metrics = read_metrics(run_dir)
    assert metrics["steps"] == 40  # one step per epoch
    assert objective > 0.6  # four classes: chance is 0.25
