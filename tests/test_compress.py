"""Compression: int8 quantization, magnitude pruning (the command and `callbacks.pruning`).

The default tests are small and in-process; the bar (int8 digits MLP and RNN at least 2x
smaller, at most 1 point of test accuracy lost) trains real runs and is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from torch import nn

from trainlab.app.compress import compress_command
from trainlab.app.compressed import load_compressed, state_dict_of
from trainlab.app.experiment import run
from trainlab.components.callbacks import Pruning
from trainlab.components.compression import (
    apply_masks,
    load_quantized_state_dict,
    pruning_masks,
    quantize_int8,
    sparsity,
)
from trainlab.components.data import TensorBatches
from trainlab.engine.checkpoint import load_checkpoint, save_checkpoint
from trainlab.engine.trainer import Trainer
from trainlab.errors import TrainlabError


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5)
    )


def test_unstructured_pruning_zeroes_exactly_the_fraction_of_each_layer() -> None:
    model = mlp()
    masks = pruning_masks(model, 0.3)
    apply_masks(model, masks)
    zeros = [int((layer.weight == 0).sum()) for layer in model if isinstance(layer, nn.Linear)]
    assert zeros == [round(0.3 * 480), round(0.3 * 1200), round(0.3 * 150)] == [144, 360, 45]
    assert sparsity(model) == pytest.approx(549 / 1830)
    # The weights kept are the largest in magnitude: every pruned one was at most the smallest kept.
    original = mlp()[0].weight.abs()
    assert original[~masks["0.weight"]].max() <= original[masks["0.weight"]].min()


def test_pruning_again_keeps_what_was_pruned_and_counts_it() -> None:
    model = mlp()
    first = pruning_masks(model, 0.2)
    apply_masks(model, first)
    second = pruning_masks(model, 0.5, masks=first)
    assert all((second[name] <= first[name]).all() for name in first)  # nothing revived
    assert list(second) == ["0.weight", "2.weight", "4.weight"]
    assert [int((~mask).sum()) for mask in second.values()] == [240, 600, 75]


def test_structured_pruning_drops_whole_units_and_keeps_the_output_layer() -> None:
    model = mlp()
    masks = pruning_masks(model, 0.5, structured=True, norm=2)
    assert list(masks) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    apply_masks(model, masks)
    first, second, last = (layer for layer in model if isinstance(layer, nn.Linear))
    dropped = (first.weight == 0).all(dim=1)
    assert int(dropped.sum()) == 20 and int((second.weight == 0).all(dim=1).sum()) == 15
    assert (first.bias[dropped] == 0).all()  # a dropped unit's bias goes too
    assert int((first.weight == 0).sum()) == 20 * 12  # whole rows only
    assert int((last.weight == 0).sum()) == 0
    # The dropped units are those of smallest L2 norm.
    norms = mlp()[0].weight.norm(dim=1)
    assert norms[dropped].max() <= norms[~dropped].min()


def test_unstructured_pruning_covers_recurrent_weight_matrices() -> None:
    model = lstm_model()
    masks = pruning_masks(model, 0.5)
    assert list(masks) == [
        "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l0_reverse",
        "lstm.weight_hh_l0_reverse", "lstm.weight_ih_l1", "lstm.weight_hh_l1",
        "lstm.weight_ih_l1_reverse", "lstm.weight_hh_l1_reverse", "gru.weight_ih_l0",
        "gru.weight_hh_l0", "head.weight",
    ]  # fmt: skip
    apply_masks(model, masks)
    assert sparsity(model) == pytest.approx(0.5, abs=1e-3)
    assert int((model.lstm.weight_hh_l1 == 0).sum()) == 64 * 16 // 2
    assert (model.lstm.bias_hh_l0 != 0).all()  # biases are not pruned


def lstm_model(seed: int = 0) -> nn.Module:
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 16, num_layers=2, bidirectional=True, batch_first=True)
            self.gru = nn.GRU(32, 8, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.head(self.gru(self.lstm(inputs)[0])[0][:, -1])

    torch.manual_seed(seed)
    return Tagger()


def embedding_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(500, 32, padding_idx=0), nn.Flatten(), nn.Linear(96, 3))


@pytest.mark.parametrize(
    "build", [mlp, lstm_model, embedding_model], ids=["mlp", "lstm_gru", "embedding"]
)
def test_int8_model_reloads_with_weights_only_and_gives_the_same_outputs(build, tmp_path):
    model = build()
    quantized = quantize_int8(model)
    path = tmp_path / "model.pt"
    torch.save(state_dict_of(quantized), path)
    assert path.stat().st_size < os_size(model, tmp_path)  # (sizes at scale: the slow bar)
    fresh = quantize_int8(build(seed=1))
    inputs = {
        mlp: torch.randn(4, 12),
        lstm_model: torch.randn(4, 5, 6),
        embedding_model: torch.randint(0, 500, (4, 3)),
    }[build]
    assert not torch.equal(fresh(inputs), quantized(inputs))  # other weights, until loaded
    load_quantized_state_dict(fresh, torch.load(path, weights_only=True))
    assert torch.equal(fresh(inputs), quantized(inputs))
    assert not torch.equal(fresh(inputs), model(inputs))  # int8: close, not equal
    assert (fresh(inputs) - model(inputs)).abs().max() < 0.05


def os_size(model: nn.Module, folder: Path) -> int:
    torch.save(model.state_dict(), folder / "fp32.pt")
    return (folder / "fp32.pt").stat().st_size


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 0.0), (1, 0.0), (2, 0.6 * (1 - 0.75**3)), (3, 0.6 * (1 - 0.5**3)), (5, 0.6), (9, 0.6)],
)
def test_pruning_schedule_rises_cubically_to_amount(epoch, expected) -> None:
    callback = Pruning(amount=0.6, start_epoch=2, end_epoch=5)
    assert callback.target(epoch, max_epochs=10) == pytest.approx(expected)


def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    targets = torch.arange(96) % 3
    inputs = torch.randn(96, 4, generator=generator) * 1.5 + targets[:, None].float()
    return inputs, targets


def pruning_trainer(max_epochs: int) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    return Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=0.01),
        nn.CrossEntropyLoss(),
        max_epochs=max_epochs,
        callbacks=[Pruning(amount=0.5, end_epoch=2)],
    )


def fit(trainer: Trainer) -> None:
    inputs, targets = blobs()
    trainer.fit(
        TensorBatches(inputs[:64], targets[:64], 16, shuffle=True, seed=1),
        TensorBatches(inputs[64:], targets[64:], 32),
    )


def test_pruning_callback_resumes_where_an_unstopped_run_would_be(tmp_path) -> None:
    whole = pruning_trainer(max_epochs=3)
    fit(whole)
    first, last = whole.model[0].weight, whole.model[2].weight
    assert int((first == 0).sum()) == 32 and int((last == 0).sum()) == 24  # half of 64, 48

    stopped = pruning_trainer(max_epochs=1)
    fit(stopped)
    save_checkpoint(stopped.checkpoint(), tmp_path / "last.pt")  # as ModelCheckpoint does
    payload = load_checkpoint(tmp_path / "last.pt")
    saved = payload["callbacks"]["Pruning{'amount': 0.5, 'structured': False}"]
    assert saved["pruned_epoch"] == 0 and saved["fraction"] == pytest.approx(0.5 * (1 - 8 / 27))
    resumed = pruning_trainer(max_epochs=3)
    resumed.restore(payload)
    fit(resumed)
    for ours, theirs in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    # The model's state dict keeps its plain names: a pruned model loads anywhere.
    assert list(resumed.model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "mlp"
    run(compose_config("debug=fast", output_dir=folder))
    return folder


def digest(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "compressed" not in p.parts
    }


def test_compress_writes_a_folder_that_loads_as_the_model_it_measured(quick_run, capsys):
    before = digest(quick_run)
    folder = compress_command([f"run={quick_run}", "method=quantize"])
    table = capsys.readouterr().out
    assert folder == quick_run / "compressed" / "quantize"
    assert sorted(p.name for p in folder.iterdir()) == [
        "compressed.json",
        "data_info.json",
        "model.pt",
        "report.md",
    ]
    manifest = json.loads((folder / "compressed.json").read_text())
    results = manifest["results"]
    assert results["quantize"]["size_bytes"] == (folder / "model.pt").stat().st_size
    assert results["fp32"]["size_bytes"] / results["quantize"]["size_bytes"] > 3
    assert table.splitlines()[0].startswith("| model | size (KiB) | size ratio |")
    assert table.splitlines()[3].startswith("| quantize | ")
    model = load_compressed(folder)
    assert model.layers[1]._get_name() == "DynamicQuantizedLinear"
    from trainlab.app.run_model import load_run

    measured = load_run(quick_run).evaluate(model)
    assert measured == pytest.approx(results["quantize"]["test"])
    assert digest(quick_run) == before  # the run itself is untouched


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("model.pt", "model.pt does not load into the model compressed.json names ("),
        ("compressed.json", "compressed.json cannot be read (JSONDecodeError); compress the run"),
    ],
)
def test_a_damaged_compressed_folder_is_refused_in_one_line(quick_run, tmp_path, broken, message):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(compress_command([f"run={quick_run}", "method=quantize"]), folder)
    (folder / broken).write_bytes(b"not what was written")
    with pytest.raises(TrainlabError) as caught:
        load_compressed(folder)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_prune_command_zeroes_the_fraction_and_finetunes_with_zeros_held(quick_run):
    folder = compress_command(
        [f"run={quick_run}", "method=prune", "amount=0.75", "finetune_epochs=1"]
    )
    model = load_compressed(folder)
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [int((m.weight == 0).sum()) for m in layers] == [
        round(0.75 * m.weight.numel()) for m in layers
    ]
    manifest = json.loads((folder / "compressed.json").read_text())
    assert manifest["options"] == {"amount": 0.75, "structured": False, "finetune_epochs": 1}
    assert manifest["results"]["prune"]["sparsity"] == pytest.approx(0.75, abs=1e-4)


BAD = [
    ([], "run and method not given; usage: trainlab compress run=<run folder> method="),
    (["run=R", "method=quantise"], "method=quantise is not a compression method (did you mean"),
    (["run=R", "method=quantize", "amount=0.5"], "amount= is an option of method=prune;"),
    (["run=R", "method=prune", "amount=1.5"], "amount=1.5: must be a fraction in [0, 1), e.g."),
    (["run=R", "method=prune", "amount=half"], "amount=half: must be a fraction in [0, 1)"),
    (["run=R", "method=prune", "finetune_epochs=-1"], "finetune_epochs=-1: must be an integer"),
    (["run=R", "method=prune", "structured=yes"], "structured=yes: must be true or false"),
    (["run=R", "method=prune", "amout=0.5"], "unknown option 'amout' (did you mean 'amount'?)"),
    (["run=R", "method=prune", "run=R"], "run= is given twice (R, R); give it once"),
    (["R", "method=prune"], "cannot parse 'R': write key=value"),
    (["run=nowhere", "method=prune"], "run=nowhere: no such run folder; point run= at"),
    (["run=R/checkpoints", "method=prune"], "is not a trainlab run folder (no data_info.json)"),
    (["run=R", "method=prune", "checkpoint=step_9.pt"], "checkpoint not found: step_9.pt"),
    (["run=R", "method=quantize"], "run=R has no checkpoints/best.pt or last.pt (stopped before"),
]


@pytest.fixture
def bare_run(tmp_path) -> Path:
    """A run folder as far as the checks before loading a model look: its data_info.json."""
    folder = tmp_path / "R"
    (folder / "checkpoints").mkdir(parents=True)
    info = {"name": "digits", "task": "multiclass", "input_kind": "image", "input_shape": [1, 8, 8]}
    (folder / "data_info.json").write_text(json.dumps(info | {"num_classes": 10}))
    return folder


@pytest.mark.parametrize(("args", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_options_are_one_line_naming_the_option(bare_run, args, message) -> None:
    before = digest(bare_run)
    args = [arg.replace("R", str(bare_run)) if "=R" in arg or arg == "R" else arg for arg in args]
    with pytest.raises(TrainlabError) as caught:
        compress_command(args)
    text = str(caught.value).replace(str(bare_run), "R")
    assert "\n" not in text and len(text) < 300
    assert message in text
    assert digest(bare_run) == before


def trainlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "trainlab", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "rnn"])
def test_int8_digits_model_is_2x_smaller_with_at_most_1_point_lost(model, tmp_path) -> None:
    """The bar of issue 17: a full digits run (the default 10-epoch recipe's length)."""
    trained = trainlab(
        f"model={model}", "trainer.max_epochs=10", f"hydra.run.dir={tmp_path / model}", cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr
    compressed = trainlab("compress", f"run={tmp_path / model}", "method=quantize", cwd=tmp_path)
    assert compressed.returncode == 0, compressed.stderr
    results = json.loads((tmp_path / model / "compressed/quantize/compressed.json").read_text())
    fp32, int8 = results["results"]["fp32"], results["results"]["quantize"]
    assert fp32["size_bytes"] / int8["size_bytes"] >= 2
    assert int8["test"]["test/acc"] >= fp32["test"]["test/acc"] - 0.01
    assert fp32["test"]["test/acc"] > 0.9  # a trained model, not a coin
    assert "| quantize | " in compressed.stdout


@pytest.mark.slow
def test_compress_command_bad_input_exits_2_with_one_line(tmp_path) -> None:
    result = trainlab("compress", f"run={tmp_path}", "method=prune", "amount=2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: amount=2: must be a fraction in [0, 1), e.g. amount=0.5"
    ]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_callbacks_pruning_trains_a_run_whose_last_weights_are_half_zero(tmp_path) -> None:
    result = trainlab(
        "callbacks=pruning",
        "callbacks.pruning.amount=0.5",
        "trainer.max_epochs=3",
        "callbacks.pruning.structured=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    weights = load_checkpoint(tmp_path / "run/checkpoints/last.pt")["model"]
    first = weights["layers.1.weight"]  # MLP [256, 128]: 128 of 256 rows dropped
    assert int((first == 0).all(dim=1).sum()) == 128
    assert "pruning: " in result.stdout
