"""`trainlab serve`: a real uvicorn server on 127.0.0.1 queried with httpx.

These tests share one server, in a thread of this process, around a digits `Predictor`
built in memory (an untrained seeded MLP with the digits scaling: no training, to keep
the default suite short). tests/test_serve_cli.py (slow) trains runs of every kind and
starts `trainlab serve` as a user does; tests/test_serve_requests.py checks the table and
text request readers.
"""

from __future__ import annotations

import base64
import io
import re
import socket
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
from PIL import Image
from sklearn import datasets

from trainlab.app.predict import Predictor
from trainlab.app.predict_inputs import ArrayInput, feature_names
from trainlab.app.serve import listen, serve_command
from trainlab.app.serve_app import build_app
from trainlab.components.data.datasets import load_digits
from trainlab.components.models.mlp import MLP
from trainlab.errors import TrainlabError

SEED = 42  # train.yaml's default seed


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
