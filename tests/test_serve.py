"""`trainlab serve`: a real uvicorn server on 127.0.0.1 queried with httpx.

The default tests share one server, in a thread of this process, around a digits
`Predictor` built in memory (an untrained seeded MLP with the digits scaling: no training,
to keep the default suite short). The slow ones train runs and start `trainlab serve` as a
user does, for image, table, text and regression runs, and compare its answers with
`trainlab predict`'s.
"""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
import uvicorn
from conftest import cli_env, compose_config, read_metrics
from PIL import Image
from sklearn import datasets

from trainlab.app.experiment import run
from trainlab.app.predict import Predictor
from trainlab.app.predict_inputs import ArrayInput, TableInput, TextInput, feature_names
from trainlab.app.serve import listen, serve_command
from trainlab.app.serve_app import build_app
from trainlab.app.serve_requests import RequestError, TableRequests, requests_for
from trainlab.components.data.datasets import load_digits, split_rows
from trainlab.components.data.tabular import load_table
from trainlab.components.data.text import TextPreprocessor
from trainlab.components.data.text_datasets import demo_reviews
from trainlab.components.models.mlp import MLP
from trainlab.errors import TrainlabError

SEED = 42  # train.yaml's default seed


def train(folder: Path, *overrides: str) -> Path:
    run(compose_config(*overrides, "debug=fast", output_dir=folder))
    return folder


class ThreadServer:
    """The server `trainlab serve` runs, in a thread of this process (no signals there)."""

    def __init__(self, predictor: Predictor, max_batch: int, max_wait_ms: float) -> None:
        self.predictor = predictor
        run_dir = predictor.checkpoint.parents[1]
        app = build_app(self.predictor, run_dir, max_batch, max_wait_ms)
        sock = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread ended before it started"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def digits_data() -> Any:
    """data=digits as configured by default."""
    return load_digits(seed=SEED, val_fraction=0.15, test_fraction=0.15, scaling="standard")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A folder with the digits run's data_info.json; a checkpoint's place, but none."""
    folder = tmp_path_factory.mktemp("serve") / "digits"
    folder.mkdir()
    digits_data().save(folder)
    return folder


@pytest.fixture(scope="module")
def server(digits_run) -> Iterator[ThreadServer]:
    data = digits_data()
    torch.manual_seed(0)
    model = MLP(data.info.input_shape, data.info.num_classes, hidden_sizes=(32,)).eval()
    inputs = ArrayInput(data.info, data.preprocessor, feature_names("load_digits", 64))
    checkpoint = digits_run / "checkpoints" / "best.pt"
    served = ThreadServer(Predictor(model, data.info, inputs, {}, checkpoint), 32, 20)
    yield served
    served.stop()


def png(pixels: np.ndarray, kind: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, kind)
    return base64.b64encode(buffer.getvalue()).decode()


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame.columns if c.startswith("probability_")]].to_numpy()


def answered(answers: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    classes = [a["prediction"] for a in answers]
    return classes, np.array([list(a["probabilities"].values()) for a in answers])


# --- the default suite: one in-process server on a digits run ----------------------------------
def test_health_and_metadata_describe_the_run(server, digits_run) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    about = httpx.get(f"{server.url}/metadata").json()
    assert about["run"] == str(digits_run.resolve())
    assert about["checkpoint"] == str((digits_run / "checkpoints" / "best.pt").resolve())
    assert (about["data"], about["task"]) == ("digits", "multiclass")
    assert about["classes"] == [str(d) for d in range(10)]
    assert about["input"]["kind"] == "image" and about["input"]["shape"] == [1, 8, 8]
    assert about["input"]["features"][:2] == ["pixel_0_0", "pixel_0_1"]
    assert about["batching"] == {"max_batch": 32, "max_wait_ms": 20}
    assert about["versions"]["torch"].startswith("2.13.0")
    assert set(about["stats"]) == {"requests", "items", "model_calls", "largest_batch"}


def test_answers_equal_the_predictors_on_the_same_rows(server) -> None:
    images = datasets.load_digits().images[:30]
    expected = server.predictor.predict(images)  # what `trainlab predict` writes
    reply = httpx.post(f"{server.url}/predict", json={"inputs": images.tolist()})
    assert reply.status_code == 200
    classes, probs = answered(reply.json()["predictions"])
    assert classes == expected["prediction"].tolist()
    assert np.allclose(probs, probabilities(expected), atol=1e-6)
    # One item (`input`), flat or with its channel, and by feature name: the same answer.
    one = reply.json()["predictions"][3]
    flat = {"input": images[3].reshape(-1).tolist()}
    named = {"input": {f"pixel_{r}_{c}": images[3][r, c] for r in range(8) for c in range(8)}}
    for body in (flat, {"input": images[3][None].tolist()}, named):
        single = httpx.post(f"{server.url}/predict", json=body).json()
        assert single["prediction"] == one["prediction"]
        assert np.allclose(
            list(single["probabilities"].values()), list(one["probabilities"].values()), atol=1e-6
        )


def test_png_images_give_the_arrays_answers_and_jpeg_is_read(server) -> None:
    images = datasets.load_digits().images[:8]  # pixels 0..16: a PNG keeps them exactly
    arrays = httpx.post(f"{server.url}/predict", json={"inputs": images.tolist()}).json()
    pngs = httpx.post(f"{server.url}/predict", json={"inputs": [png(i) for i in images]}).json()
    assert pngs == arrays
    jpeg = httpx.post(f"{server.url}/predict", json={"input": png(images[0] * 15, "JPEG")})
    assert jpeg.status_code == 200 and jpeg.json()["prediction"] in [str(d) for d in range(10)]


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(server) -> None:
    images = datasets.load_digits().images[:16]
    expected = server.predictor.predict(images)["prediction"].tolist()
    # A batch closes when max_batch items have come (or after 10 s): 16 one-item requests
    # from 16 clients are one model call, however busy the machine.
    batched = ThreadServer(server.predictor, max_batch=16, max_wait_ms=10_000)
    start, answers, client = threading.Barrier(16), {}, httpx.Client(timeout=60)

    def ask(i: int) -> None:
        start.wait()
        answers[i] = client.post(f"{batched.url}/predict", json={"input": images[i].tolist()})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = httpx.get(f"{batched.url}/metadata").json()["stats"]
    finally:
        client.close()
        batched.stop()
    assert [answers[i].json()["prediction"] for i in range(16)] == expected
    assert stats == {"requests": 16, "items": 16, "model_calls": 1, "largest_batch": 16}


def test_a_batch_larger_than_the_room_left_waits_for_the_next_call(server) -> None:
    images = datasets.load_digits().images[:40]
    bodies = [images[:20], images[20:40], images[5:25]]  # 20 + 20 > max_batch=32
    replies: dict[int, httpx.Response] = {}

    def ask(i: int) -> None:
        replies[i] = httpx.post(f"{server.url}/predict", json={"inputs": bodies[i].tolist()})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, body in enumerate(bodies):
        expected = server.predictor.predict(body)["prediction"].tolist()
        assert [a["prediction"] for a in replies[i].json()["predictions"]] == expected
    assert httpx.get(f"{server.url}/metadata").json()["stats"]["largest_batch"] <= 32


ROW = np.zeros(64).tolist()
BAD_REQUESTS = [
    (b"", 400, 'body: empty; send JSON, e.g. {"inputs": [...]}'),
    (
        b"{bad",
        400,
        "body: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))",
    ),
    (
        b"[1, 2]",
        400,
        'body: a list (JSON); send an object, {"input": ...} for one item or '
        '{"inputs": [...]} for a batch',
    ),
    (
        {"inptus": [ROW]},
        422,
        "body: unknown field 'inptus' (did you mean 'inputs'?); the body "
        'takes "input" (one item) or "inputs" (a list of items)',
    ),
    (
        {"input": ROW, "inputs": [ROW]},
        422,
        'body: give "input" (one item) or "inputs" (a batch), not both',
    ),
    ({"inputs": []}, 422, "inputs: the list is empty; send at least one item"),
    ({"inputs": ROW[0]}, 422, "inputs: a number; it must be a list of items"),
    (
        {"inputs": [ROW] * 33},
        413,
        "inputs: 33 items; this server takes at most 32 per request (max_batch): split the batch",
    ),
    (
        {"input": None},
        422,
        "input: null; send a list of numbers, a base64 image or an object {feature: number}",
    ),
    (
        {"inputs": [ROW, ROW[:63]]},
        422,
        "inputs[1]: shape [63]; this run (digits) takes [1, 8, 8] or 64 flat numbers",
    ),
    (
        {"inputs": [ROW, [*ROW[:63], "x"]]},
        422,
        "inputs[1]: not a list of numbers of shape [1, 8, 8] (ragged, or holds text or null)",
    ),
    (
        b'{"input": [Infinity' + b", 0" * 63 + b"]}",
        422,
        "input: holds a value that is not finite; send numbers",
    ),
    (
        {"input": "not base64!"},
        422,
        "input: not valid base64; send the PNG or JPEG file's bytes base64-encoded",
    ),
    (
        {"input": base64.b64encode(b"GIF89a not an image").decode()},
        422,
        "input: not a readable PNG or JPEG image (UnidentifiedImageError); send the image "
        "file's bytes base64-encoded",
    ),
    (
        {"input": png(np.zeros((9, 8)))},
        422,
        "input: the image is 8x9 pixels; this run (digits) takes 8x8",
    ),
    (
        {"input": {"pixel_0_0": 1}},
        422,
        "input.pixel_0_1: missing (and 62 more); give every feature",
    ),
    (
        {"input": {"pixl_0_0": 1}},
        422,
        "input.pixl_0_0: unknown feature (did you mean 'pixel_0_0'?)",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS)
def test_a_bad_request_gets_a_4xx_with_one_line_naming_the_field(
    server, body, status, message
) -> None:
    if isinstance(body, bytes):
        reply = httpx.post(f"{server.url}/predict", content=body)
    else:
        reply = httpx.post(f"{server.url}/predict", json=body)
    assert (reply.status_code, reply.json()) == (status, {"error": message})
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}


def test_unknown_endpoints_and_methods_are_named(server) -> None:
    missing = httpx.get(f"{server.url}/predcit")
    assert (missing.status_code, missing.json()["error"]) == (
        404,
        "/predcit: no such endpoint; the server answers POST /predict, GET /health, GET /metadata",
    )
    wrong = httpx.get(f"{server.url}/predict")
    assert wrong.status_code == 405 and wrong.json()["error"].startswith(
        "GET /predict: not allowed"
    )


def test_each_request_is_logged_in_one_line(server, caplog) -> None:
    with caplog.at_level("INFO", logger="trainlab"):
        httpx.post(f"{server.url}/predict", json={"inputs": [ROW, ROW]})
        httpx.post(f"{server.url}/predict", json={"inputs": []})
        deadline = time.monotonic() + 10  # the line is written once the answer has gone
        while len(lines := [m for m in caplog.messages if m.startswith("POST /predict")]) < 2:
            assert time.monotonic() < deadline, caplog.messages
            time.sleep(0.01)
    assert re.fullmatch(r"POST /predict 200 items=2 \d+\.\d ms", lines[0]), lines
    assert re.fullmatch(r"POST /predict 422 items=0 \d+\.\d ms", lines[1]), lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["port=8000"], "run not given; usage: trainlab serve run=<run folder>"),
        (["run=x", "prot=1"], "unknown option 'prot' (did you mean 'port'?); usage:"),
        (["run=x", "port=http"], "port=http is not a whole number; e.g. port=8000"),
        (["run=x", "port=70000"], "port=70000 is out of range (0 to 65535); e.g. port=8000"),
        (["run=x", "max_batch=0"], "max_batch=0 is out of range (1 to 65536); e.g. max_batch=256"),
        (["run=x", "max_wait_ms=-1"], "max_wait_ms=-1 is out of range (0 to 10000)"),
        (["run=x", "max_wait_ms=nan"], "max_wait_ms=nan is out of range (0 to 10000)"),
        (["run=x", "host="], "host= is empty; give a value, e.g. host=127.0.0.1"),
        (["run=nowhere"], "run=nowhere: no such run folder; point run= at the folder"),
    ],
)
def test_bad_options_are_one_line_before_anything_is_loaded(argv, message) -> None:
    with pytest.raises(TrainlabError) as raised:
        serve_command(argv)
    assert str(raised.value).startswith(message)


def test_a_port_in_use_is_refused_in_words(digits_run) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TrainlabError) as raised:
            serve_command([f"run={digits_run}", f"port={port}"])
    assert str(raised.value) == (
        f"port={port} is in use on 127.0.0.1 (another server?); stop it or choose another "
        f"port, e.g. port={port + 1}"
    )
    with pytest.raises(TrainlabError, match=r"^host=no-such-host\.invalid: not an address"):
        listen("no-such-host.invalid", 0)


class FailsOnHugeInputs(torch.nn.Module):
    """A model with a fault: it raises on a batch holding a value over 1000."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 1000:
            raise RuntimeError("a fault in the model")
        return torch.zeros(len(x), 10)


def test_a_fault_in_the_model_call_answers_500_and_the_server_goes_on(digits_run) -> None:
    data = digits_data()
    inputs = ArrayInput(data.info, None, feature_names("load_digits", 64))  # no scaling
    checkpoint = digits_run / "checkpoints" / "best.pt"
    predictor = Predictor(FailsOnHugeInputs(), data.info, inputs, {}, checkpoint)
    served = ThreadServer(predictor, max_batch=8, max_wait_ms=0)
    try:
        fault = httpx.post(f"{served.url}/predict", json={"input": [5000.0] * 64})
        assert (fault.status_code, fault.json()) == (
            500,
            {"error": "the server failed on this request (RuntimeError: a fault in the model)"},
        )
        good = httpx.post(f"{served.url}/predict", json={"input": [1.0] * 64})
        assert good.status_code == 200 and good.json()["probabilities"]["0"] == pytest.approx(0.1)
    finally:
        served.stop()


# --- the request readers of table and text runs, in-process (no model needed) ---------------
@pytest.fixture(scope="module")
def pets_requests(table_csv) -> TableRequests:
    bundle = load_table(seed=SEED, path=str(table_csv), target="label")
    return requests_for(TableInput(bundle.preprocessor, {}))


def test_json_rows_encode_exactly_as_the_same_rows_read_from_csv(pets_requests, table_csv):
    """`trainlab predict` reads a CSV; the server, JSON objects: the model gets the same."""
    rows = pd.read_csv(table_csv).head(25).drop(columns="label")
    items = json.loads(rows.to_json(orient="records"))  # NaN -> null, as a client sends gaps
    assert any(v is None for item in items for v in item.values())
    served = pets_requests.encode(pets_requests.check(items, True), "inputs")
    read = pets_requests.inputs.encode(pd.read_csv(table_csv).head(25), "input=pets.csv")
    assert torch.equal(served, read)
    nulls = [dict.fromkeys(item, None) for item in items[:2]]  # every value missing: filled
    assert pets_requests.encode(pets_requests.check(nulls, True), "inputs").isfinite().all()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"id": 1, "weight": 0.5, "height": 1},
            "inputs[0].color: missing; give every input column (null for a missing value)",
        ),
        (
            {"weight": 0.5},
            "inputs[0].id: missing (and 2 more column(s)); give every input "
            "column (null for a missing value)",
        ),
        (
            {"id": 1, "weight": "heavy", "height": 1, "color": "red"},
            "inputs[0].weight: a "
            "string ('heavy'); the model was trained on numbers in this column: send a number or "
            "null",
        ),
        (
            {"id": 1, "weight": [1], "height": 1, "color": "red"},
            "inputs[0].weight: a list "
            "([1]); the model was trained on numbers in this column: send a number or null",
        ),
        (
            {"id": 1, "weight": 10**400, "height": 1, "color": "red"},
            "inputs[0].weight: "
            "100000000000000000000000000... is not a finite number; send a number, or null to "
            "have it filled as in training",
        ),
        (
            {"id": 1, "weight": float("inf"), "height": 1, "color": "red"},
            "inputs[0].weight: "
            "inf is not a finite number; send a number, or null to have it filled as in training",
        ),
        (
            {"id": 1, "weight": 1, "height": 1, "color": {"r": 1}},
            "inputs[0].color: an object; send a text, a number or null",
        ),
        (
            {"id": 1, "weight": 1, "height": 1, "color": "red", "colour": "red"},
            "inputs[0]."
            "colour: unknown column (did you mean 'color'?); the model takes the columns listed "
            "by GET /metadata",
        ),
        (
            ["red", 1],
            "inputs[0]: a list; a table row is an object {column: value} with the "
            "columns id, weight, height, color",
        ),
    ],
)
def test_table_items_are_refused_naming_row_and_column(pets_requests, item, message) -> None:
    with pytest.raises(RequestError) as raised:
        pets_requests.check([item], True)
    assert (raised.value.status, str(raised.value)) == (422, message)


def test_a_request_its_run_cannot_encode_fails_alone_in_a_shared_batch(table_csv, tmp_path):
    """A table run trained with data.impute=drop cannot fill a gap: the request with one is
    refused, the requests batched with it are answered."""
    bundle = load_table(seed=SEED, path=str(table_csv), target="label", impute="drop")
    torch.manual_seed(0)
    model = MLP(bundle.info.input_shape, bundle.info.num_classes, hidden_sizes=(8,)).eval()
    inputs = TableInput(bundle.preprocessor, {})
    predictor = Predictor(model, bundle.info, inputs, {}, tmp_path / "checkpoints" / "best.pt")
    rows = pd.read_csv(table_csv).drop(columns="label").dropna().head(6)
    items = json.loads(rows.to_json(orient="records"))
    gap = {**items[0], "weight": None}
    expected = predictor.predict(rows)["prediction"].tolist()
    # The batch closes when its 7 items have come (or after 5 s): one shared call.
    served = ThreadServer(predictor, max_batch=7, max_wait_ms=5000)
    try:
        bodies = [{"inputs": items[:3]}, {"input": gap}, {"inputs": items[3:]}]
        replies, client = {}, httpx.Client(timeout=60)

        def ask(i: int) -> None:
            replies[i] = client.post(f"{served.url}/predict", json=bodies[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        got = [a["prediction"] for i in (0, 2) for a in replies[i].json()["predictions"]]
        assert got == expected
        assert (replies[1].status_code, replies[1].json()["error"]) == (
            422,
            "input has missing values (data rows 1) but the run was trained with "
            "data.impute=drop, which cannot fill them: fill them in, or train with "
            "data.impute=median (or mean, most_frequent, knn)",
        )
        stats = httpx.get(f"{served.url}/metadata").json()["stats"]
        assert (stats["requests"], stats["items"], stats["model_calls"]) == (2, 6, 1)
    finally:
        served.stop()


def test_text_items_are_strings_or_the_text_column() -> None:
    reviews = demo_reviews(SEED, n_samples=60)
    preprocessor = TextPreprocessor.fit(list(reviews["text"]), tokenizer="word")
    reader = requests_for(TextInput(preprocessor, "review"))
    texts = reader.check(["good screen", {"review": "bad battery"}, ""], True)
    assert torch.equal(
        reader.encode(texts, "inputs"), preprocessor.encode(["good screen", "bad battery", ""])
    )
    for items, message in [
        ([3], "inputs[0]: a number; a text run takes strings"),
        ([None], "inputs[0]: null; a text run takes strings"),
        (
            [{"reviews": "x"}],
            "inputs[0].reviews: unknown field (did you mean 'review'?); a text item "
            'is a string or {"review": "..."}',
        ),
        ([{}], "inputs[0].review: missing; send the text"),
        ([{"review": 5}], "inputs[0].review: a number; a text run takes strings"),
        (["", " \n"], "inputs: all 2 texts are empty; send words"),
    ]:
        with pytest.raises(RequestError) as raised:
            reader.check(items, True)
        assert str(raised.value) == message
    with pytest.raises(RequestError, match=r"^input: the text is empty; send words$"):
        reader.check([""], False)


# --- slow: `trainlab serve` in its own process, every kind of run ------------------------------
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
def test_startup_mistakes_exit_2_with_one_line(digits_run, tmp_path) -> None:
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
