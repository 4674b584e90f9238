"""Explanations: permutation importance, integrated gradients, saliency, token attributions.

The default tests check the computations on models whose answer is known and the names
given to a table's inputs; the command on trained runs (tables, digits, text) is slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from trainlab.app.attributions import (
    input_names,
    integrated_gradients,
    permutation_importance,
    saliency,
    token_attributions,
    token_texts,
)
from trainlab.app.explain import explain_command
from trainlab.errors import TrainlabError

MATTER = [2, 7]  # the only inputs the known model reads


def known_model() -> nn.Module:
    """Two classes decided by inputs 2 and 7 alone: logit difference 3*x2 - 2*x7."""
    model = nn.Linear(10, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 2], model.weight[1, 7] = 3.0, -2.0
    return model


def known_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(400, 10, generator=generator)
    return inputs, (3 * inputs[:, 2] - 2 * inputs[:, 7] > 0).long()


def test_permutation_importance_ranks_the_two_inputs_that_matter_first() -> None:
    model = known_model()
    inputs, targets = known_data()

    def accuracy(values: torch.Tensor) -> float:
        return float((model(values).argmax(dim=1) == targets).float().mean())

    mean, std = permutation_importance(accuracy, inputs, [[i] for i in range(10)], True)
    assert sorted(np.argsort(-mean)[:2].tolist()) == MATTER
    assert mean[2] > mean[7] > 0.2  # x2 carries more (weight 3 vs 2)
    assert np.abs(np.delete(mean, MATTER)).max() == 0 == np.delete(std, MATTER).max()
    grouped, _ = permutation_importance(accuracy, inputs, [[0, 1, 2], [3, 4, 5, 6, 8, 9]], True)
    assert grouped[0] > 0.2 and grouped[1] == 0


def test_integrated_gradients_of_a_linear_model_are_weight_times_input() -> None:
    model = known_model()
    inputs, targets = known_data()
    attributions = integrated_gradients(model, inputs[:50], targets[:50])
    # For a linear model, IG from a zero baseline is exact: w_target * x.
    expected = model.weight[targets[:50]].detach() * inputs[:50]
    assert torch.allclose(attributions, expected, atol=1e-5)
    assert (attributions[:, [0, 1, 3, 4, 5, 6, 8, 9]] == 0).all()


def test_saliency_is_the_absolute_gradient_of_the_target_output() -> None:
    model = nn.Sequential(nn.Flatten(), known_model())
    images = torch.randn(3, 1, 2, 5)
    maps = saliency(model, images.clone().requires_grad_(), 1)
    expected = torch.tensor([0, 0, 3.0, 0, 0, 0, 0, 2.0, 0, 0]).view(1, 2, 5)
    assert torch.equal(maps, expected.expand(3, 1, 2, 5))


def test_token_attributions_sum_to_the_output_change_from_padding() -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(6, 4, padding_idx=0)
    model = nn.Sequential(embedding, nn.Flatten(), nn.Linear(12, 2))
    tokens = torch.tensor([[3, 5, 0], [1, 2, 4]])
    values = token_attributions(model, embedding, tokens, 1, padding_idx=0)
    assert values.shape == (2, 3)
    with torch.no_grad():
        change = model(tokens)[:, 1] - model(torch.zeros_like(tokens))[:, 1]
    # Completeness: a linear model's attributions add up to the change exactly.
    assert torch.allclose(values.sum(dim=1), change, atol=1e-5)
    assert values[0, 2] == 0  # padding is the baseline: it explains nothing


def test_table_inputs_are_named_after_their_columns_with_one_hot_values(tmp_path) -> None:
    from trainlab.components.data.tabular import load_table

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, 120),
            "colour": rng.choice(["red", "blue"], 120),
            "day": pd.date_range("2024-01-01", periods=120).strftime("%Y-%m-%d"),
            "label": rng.choice(["a", "b"], 120),
        }
    )
    frame.loc[3, "age"] = np.nan
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_table(seed=0, path=str(tmp_path / "t.csv"), target="label", missing_indicator=True)
    names, columns = input_names(data.preprocessor, data.info.input_shape[0])
    assert "colour=red" in names and "colour=blue" in names and "age" in names
    assert len(names) == data.info.input_shape[0]
    assert dict(zip(names, columns, strict=True))["colour=red"] == "colour"
    assert set(columns) == {"age", "colour", "day"}  # date parts and indicators map back
    assert names.count("day_year") == 1


def test_inputs_without_a_table_transform_are_numbered() -> None:
    assert input_names(None, 3) == (["x0", "x1", "x2"], ["x0", "x1", "x2"])


def test_token_texts_come_from_the_vocabulary() -> None:
    from trainlab.components.data.text import TextPreprocessor

    fitted = TextPreprocessor.fit(["good film", "bad film"], vocab_size=10)
    texts = token_texts(fitted, fitted.vocab_size)
    ids = fitted.encode(["film good"])[0].tolist()
    assert [texts[i] for i in ids[:2]] == ["film", "good"]


BAD = [
    ([], "run not given; usage: trainlab explain run=<run folder>"),
    (["run=R", "split=train"], "split=train is not a split to explain"),
    (["run=R", "split=tset"], "split=tset is not a split to explain (did you mean 'test'?)"),
    (["run=R", "max_rows=0"], "max_rows=0: must be an integer >= 1, e.g. max_rows=1000"),
    (["run=R", "max_row=5"], "unknown option 'max_row' (did you mean 'max_rows'?)"),
    (["run=nowhere"], "run=nowhere: no such run folder"),
    (["run=R"], "run=R has no checkpoints/best.pt or last.pt"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_options_are_one_line(tmp_path, args, message) -> None:
    folder = tmp_path / "R"
    folder.mkdir()
    info = {"name": "d", "task": "multiclass", "input_kind": "image", "input_shape": [1, 8, 8]}
    (folder / "data_info.json").write_text(json.dumps(info))
    args = [arg.replace("=R", f"={folder}") for arg in args]
    with pytest.raises(TrainlabError) as caught:
        explain_command(args)
    text = str(caught.value).replace(str(folder), "R")
    assert "\n" not in text and message in text
    assert sorted(p.name for p in folder.iterdir()) == ["data_info.json"]  # nothing written


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


def tags(folder: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    return events.Tags()


@pytest.mark.slow
def test_explain_a_table_where_two_of_ten_columns_matter(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=1500) for i in range(9)})
    frame["kind"] = rng.choice(["p", "q", "r"], size=1500)
    shift = frame["kind"].map({"p": -1.5, "q": 0.0, "r": 1.5})
    frame["label"] = np.where(2 * frame["x4"] + shift > 0, "yes", "no")
    frame.loc[rng.choice(1500, 40), "x1"] = np.nan  # gaps, imputed
    frame.to_csv(tmp_path / "two.csv", index=False)
    run = tmp_path / "run"
    trained = trainlab(
        "data=csv", "data.path=two.csv", "data.target=label", "trainer.max_epochs=8",
        f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = trainlab("explain", f"run={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = run / "explain" / "test"
    assert sorted(p.name for p in folder.iterdir()) == [
        "attributions.png", "columns.csv", "features.csv"
    ]  # fmt: skip
    columns = pd.read_csv(folder / "columns.csv")
    assert set(columns.column[:2]) == {"x4", "kind"}
    assert columns.permutation_importance[1] > 0.1 > columns.permutation_importance[2:].max()
    ranked_by_gradients = columns.sort_values("integrated_gradients", ascending=False).column
    assert set(ranked_by_gradients[:2]) == {"x4", "kind"}
    features = pd.read_csv(folder / "features.csv")
    assert {"kind=p", "kind=q", "kind=r"} <= set(features.feature)
    assert np.isfinite(features.select_dtypes("number").to_numpy()).all()
    found = tags(run / "tb")
    assert "explain/test/attributions" in found["images"]
    assert "permutation importance (test/acc, " in result.stdout


@pytest.mark.slow
def test_explain_digits_images_and_text_tokens(tmp_path) -> None:
    digits, text = tmp_path / "digits", tmp_path / "text"
    for args in (
        ("trainer.max_epochs=3", f"hydra.run.dir={digits}"),
        ("experiment=text_rnn", "data.n_samples=600", f"hydra.run.dir={text}"),
    ):
        trained = trainlab(*args, cwd=tmp_path)
        assert trained.returncode == 0, trained.stderr
    result = trainlab("explain", f"run={digits}", "max_rows=100", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pixels = pd.read_csv(digits / "explain/test/pixels.csv")
    assert len(pixels) == 64 and (pixels.saliency >= 0).all() and pixels.saliency.max() > 0
    found = tags(digits / "tb")["images"]
    assert {"explain/test/saliency", "explain/test/inputs", "explain/test/attributions"} <= set(
        found
    )
    result = trainlab("explain", f"run={text}", "split=val", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tokens = pd.read_csv(text / "explain/val/tokens.csv")
    assert set(tokens["class"]) == {"negative", "mixed", "positive"}
    assert np.isfinite(tokens.mean_attribution).all() and (tokens["count"] >= 1).all()
