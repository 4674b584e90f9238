"""`trainlab serve` started as a user starts it, on trained runs of every kind: its
answers equal `trainlab predict`'s on the same rows (the issue's bar), it survives a flood
of bad requests, it refuses bad startups in one line, and the load test runs. All slow:
each trains runs and starts processes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import cli_env, compose_config, read_metrics
from sklearn import datasets
from test_serve import (
    BAD_REQUESTS,
    ROW,
    SEED,
    answered,
    png,
    probabilities,
)

from trainlab.app.experiment import run
from trainlab.components.data.datasets import split_rows
from trainlab.components.data.text_datasets import demo_reviews


def train(folder: Path, *overrides: str) -> Path:
    run(compose_config(*overrides, "debug=fast", output_dir=folder))
    return folder


class ServeProcess:
    """`python -m trainlab serve ARGS` with its log in a file (a full pipe would block it)."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.log = cwd / f"serve-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trainlab", "serve", *args],
            cwd=cwd,
            env=cli_env(),
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.url = self.wait_for_url()

    def wait_for_url(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := re.search(r"at (http://127\.0\.0\.1:\d+) ", self.log.read_text()):
                return found.group(1)
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError(f"no server after {timeout} s: {self.log.read_text()}")

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code, self.log.read_text()


def trainlab_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainlab", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve-runs")
    wine = datasets.load_wine(as_frame=True).frame
    wine["target"] = wine["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    wine["cellar"] = np.where(wine.index % 3 == 0, "north", "south")  # a categorical column
    wine.to_csv(folder / "wine.csv", index=False)
    return {
        "digits": train(folder / "digits"),  # the default MLP
        "table": train(
            folder / "table", "data=csv", f"data.path={folder / 'wine.csv'}", "data.target=target"
        ),
        "text": train(folder / "text", "experiment=text_rnn", "data.n_samples=600"),
        "diabetes": train(folder / "diabetes", "experiment=diabetes_mlp"),
    }


def predict_file(run_dir: Path, source: Path, cwd: Path) -> pd.DataFrame:
    result = trainlab_cli("predict", f"run={run_dir}", f"input={source}", "output=p.csv", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return pd.read_csv(cwd / "p.csv", keep_default_na=False)


@pytest.mark.slow
def test_trainlab_serve_answers_like_trainlab_predict_for_digits(runs, tmp_path) -> None:
    """The issue's bar: the same classes as `trainlab predict` (and the same probabilities)."""
    digits = datasets.load_digits()
    test = split_rows(
        digits.target, val_fraction=0.15, test_fraction=0.15, seed=SEED, stratify=True
    )[2]
    images = digits.images[test]
    np.save(tmp_path / "x.npy", images)
    written = predict_file(runs["digits"], tmp_path / "x.npy", tmp_path)
    served = ServeProcess(f"run={runs['digits']}", "port=0", cwd=tmp_path)
    try:
        with httpx.Client(base_url=served.url, timeout=60) as client:
            batch = client.post("/predict", json={"inputs": images.tolist()[:64]}).json()
            ones = [client.post("/predict", json={"input": png(i)}).json() for i in images[64:]]
        classes, probs = answered(batch["predictions"] + ones)
        assert classes == [str(c) for c in written["prediction"]]
        assert np.allclose(probs, probabilities(written).astype(float), atol=1e-6)
        accuracy = np.mean([int(c) for c in classes] == digits.target[test])
        assert accuracy == pytest.approx(read_metrics(runs["digits"])["test"]["test/acc"], abs=1e-6)
    finally:
        code, log = served.stop()
    assert code == 0 and "server stopped (SIGTERM)" in log


@pytest.mark.slow
def test_trainlab_serve_answers_like_trainlab_predict_for_tables(runs, tmp_path) -> None:
    rows = pd.read_csv(runs["table"].parent / "wine.csv").drop(columns="target").head(40)
    rows.loc[2, "alcohol"] = np.nan  # a gap, imputed as training imputed
    rows.loc[5, "cellar"] = "east"  # a category training never saw: all zeros
    rows.to_csv(tmp_path / "rows.csv", index=False)
    written = predict_file(runs["table"], tmp_path / "rows.csv", tmp_path)
    served = ServeProcess(f"run={runs['table']}", "port=0", cwd=tmp_path)
    try:
        items = json.loads(rows.to_json(orient="records"))  # NaN -> null
        reply = httpx.post(f"{served.url}/predict", json={"inputs": items}, timeout=60)
        classes, probs = answered(reply.json()["predictions"])
        assert classes == written["prediction"].tolist()
        assert np.allclose(probs, probabilities(written).astype(float), atol=1e-6)
        bad = [
            (
                {**items[0], "alcohol": "high"},
                "inputs[0].alcohol: a string ('high'); the model "
                "was trained on numbers in this column: send a number or null",
            ),
            (
                {k: v for k, v in items[0].items() if k != "cellar"},
                "inputs[0].cellar: missing; give every input column (null for a missing value)",
            ),
            (
                {**items[0], "alcohl": 1},
                "inputs[0].alcohl: unknown column (did you mean "
                "'alcohol'?); the model takes the columns listed by GET /metadata",
            ),
            (
                {**items[0], "cellar": ["north"]},
                "inputs[0].cellar: a list; send a text, a number or null",
            ),
            (
                {**items[0], "alcohol": True},
                "inputs[0].alcohol: a boolean (True); the model "
                "was trained on numbers in this column: send a number or null",
            ),
            (
                "a row",
                "inputs[0]: a string; a table row is an object {column: value} with the "
                "columns alcohol, malic_acid, ash, alcalinity_of_ash, magnesium, total_phenols, "
                "flavanoids, nonflavanoid_phenols, ...",
            ),
        ]
        for item, message in bad:
            answer = httpx.post(f"{served.url}/predict", json={"inputs": [item]})
            assert (answer.status_code, answer.json()) == (422, {"error": message})
        with_target = httpx.post(
            f"{served.url}/predict", json={"input": {**items[0], "target": "x"}}
        )
        assert with_target.json()["prediction"] == classes[0]
        about = httpx.get(f"{served.url}/metadata").json()["input"]
        assert about["kind"] == "table" and about["columns"]["cellar"] == "category"
    finally:
        code, log = served.stop()
    assert code == 0 and "server stopped (SIGTERM)" in log
    assert "POST /predict 422 items=1" in log and "Traceback" not in log


@pytest.mark.slow
def test_trainlab_serve_answers_like_trainlab_predict_for_texts(runs, tmp_path) -> None:
    texts = demo_reviews(7, n_samples=30)["text"].tolist()
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    written = predict_file(runs["text"], tmp_path / "texts.txt", tmp_path)
    served = ServeProcess(f"run={runs['text']}", "port=0", "max_batch=8", cwd=tmp_path)
    try:
        replies: dict[int, list] = {}

        def ask(i: int) -> None:  # concurrent requests of 5 texts: batched together
            body = {"inputs": texts[i * 5 : i * 5 + 5]}
            replies[i] = httpx.post(f"{served.url}/predict", json=body, timeout=60).json()[
                "predictions"
            ]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        classes, probs = answered([a for i in range(6) for a in replies[i]])
        assert classes == written["prediction"].tolist()
        assert np.allclose(probs, probabilities(written).astype(float), atol=1e-6)
        single = httpx.post(f"{served.url}/predict", json={"input": {"text": texts[0]}}).json()
        assert single["prediction"] == classes[0]
        for body, message in [
            ({"inputs": [texts[0], 3]}, "inputs[1]: a number; a text run takes strings"),
            ({"inputs": ["", "  "]}, "inputs: all 2 texts are empty; send words"),
            (
                {"input": {"txt": "good"}},
                "input.txt: unknown field (did you mean 'text'?); a "
                'text item is a string or {"text": "..."}',
            ),
        ]:
            answer = httpx.post(f"{served.url}/predict", json=body)
            assert (answer.status_code, answer.json()) == (422, {"error": message})
    finally:
        code, log = served.stop()
    assert code == 0, log


@pytest.mark.slow
def test_trainlab_serve_answers_like_trainlab_predict_for_regression(runs, tmp_path) -> None:
    features = datasets.load_diabetes(as_frame=True).frame.drop(columns="target").head(20)
    features.to_csv(tmp_path / "x.csv", index=False)
    written = predict_file(runs["diabetes"], tmp_path / "x.csv", tmp_path)
    served = ServeProcess(f"run={runs['diabetes']}", "port=0", cwd=tmp_path)
    try:
        items = features.to_dict(orient="records")  # by feature name
        reply = httpx.post(f"{served.url}/predict", json={"inputs": items}).json()
        values = [a["prediction"] for a in reply["predictions"]]
        assert np.allclose(values, written["prediction"].astype(float), rtol=1e-5)
        about = httpx.get(f"{served.url}/metadata").json()
        assert (about["task"], about["targets"], about["input"]["kind"]) == (
            "regression",
            1,
            "array",
        )
        image = httpx.post(f"{served.url}/predict", json={"input": png(np.zeros((8, 8)))})
        assert image.json()["error"].startswith("input: a string; this run (diabetes) takes a list")
    finally:
        served.stop()


@pytest.mark.slow
def test_the_server_survives_a_flood_of_bad_requests(runs, tmp_path) -> None:
    served = ServeProcess(f"run={runs['digits']}", "port=0", "max_batch=32", cwd=tmp_path)
    try:
        bad = [case[0] for case in BAD_REQUESTS]
        statuses: list[int] = []

        def flood(offset: int) -> None:
            with httpx.Client(timeout=60) as client:
                for i in range(40):
                    body = bad[(offset + i) % len(bad)]
                    kind = "content" if isinstance(body, bytes) else "json"
                    statuses.append(
                        client.post(f"{served.url}/predict", **{kind: body}).status_code
                    )

        threads = [threading.Thread(target=flood, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(statuses) == 320 and all(400 <= s < 500 for s in statuses)
        good = httpx.post(f"{served.url}/predict", json={"input": ROW})
        assert good.status_code == 200
    finally:
        code, log = served.stop()
    assert code == 0 and "Traceback" not in log
    assert len([line for line in log.splitlines() if line.startswith("POST /predict 4")]) == 320


@pytest.mark.slow
def test_startup_mistakes_exit_2_with_one_line(runs, tmp_path) -> None:
    digits_run = runs["digits"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["run=missing"], "error: run=missing: no such run folder; point run= at the folder"),
            ([f"run={digits_run}", "port=eighty"], "error: port=eighty is not a whole number"),
            ([f"run={digits_run}", f"port={port}"], f"error: port={port} is in use on 127.0.0.1"),
            ([f"run={digits_run}", "host=256.1.1.1"], "error: host=256.1.1.1: not an address"),
        ]
        for args, start in cases:
            result = trainlab_cli("serve", *args, cwd=tmp_path)
            assert result.returncode == 2, result
            assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(start)
            assert "Traceback" not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no outputs/


@pytest.mark.slow
def test_the_load_test_reports_every_figure(runs, tmp_path) -> None:
    report = tmp_path / "serve.json"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/bench_serve.py",
            f"--run={runs['digits']}",
            "--seconds=1",
            "--batch-sizes=1,4",
            "--clients=4",
            f"--json={report}",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(report.read_text())["serve"]
    assert [f["items_per_request"] for f in figures] == [1, 4]
    for figure in figures:
        assert figure["ratio"] > 0 and figure["p99_ms"] >= figure["p50_ms"] > 0
        assert figure["items_per_model_call"] >= figure["items_per_request"]
