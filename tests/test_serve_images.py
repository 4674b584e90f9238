"""`trainlab serve` on an image-folder run: base64 PNG / JPEG images of any size get the
answers `trainlab predict` gives the same image files (the same decoding, resizing and
normalisation); a bad image is a 422 naming the field."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import train_in_process
from PIL import Image
from test_image_folder import write_digits
from test_serve import ThreadServer, answered, probabilities

from trainlab.app.predict import Predictor

pytestmark = pytest.mark.slow  # trains a run


def encoded(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_images_over_http_get_the_answers_of_predict_on_the_files(tmp_path) -> None:
    folder = write_digits(tmp_path / "digits", count=200)
    done = train_in_process(
        "data=image_folder",
        f"data.path={folder}",
        "data.image_size=[8,8]",
        "model=cnn",
        "model.channels=[8]",
        "trainer.max_epochs=1",
        "logger=none",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "outputs" / "runs" / "in-process"
    files = sorted((folder / "3").iterdir())[:4]
    big = tmp_path / "big.png"  # another size: resized as predict resizes a file
    Image.open(files[0]).resize((24, 24)).save(big)
    jpeg = tmp_path / "one.jpg"
    Image.open(files[1]).convert("RGB").save(jpeg, "JPEG")
    files += [big, jpeg]
    predictor = Predictor.load(run_dir)
    expected = predictor.predict(files)
    server = ThreadServer(predictor, max_batch=8, max_wait_ms=5)
    try:
        about = httpx.get(f"{server.url}/metadata").json()
        assert about["input"]["kind"] == "image" and about["input"]["shape"] == [1, 8, 8]
        reply = httpx.post(f"{server.url}/predict", json={"inputs": [encoded(f) for f in files]})
        assert reply.status_code == 200, reply.text
        classes, probs = answered(reply.json()["predictions"])
        assert classes == [str(c) for c in expected["prediction"]]
        np.testing.assert_allclose(probs, probabilities(expected), atol=1e-6)
        gif = tmp_path / "one.gif"
        Image.open(files[0]).save(gif, "GIF")
        batch = {"inputs": [encoded(files[0]), encoded(gif)]}
        bad = httpx.post(f"{server.url}/predict", json=batch)
        assert bad.status_code == 422 and "inputs[1]: a GIF image" in bad.text
        bad = httpx.post(f"{server.url}/predict", json={"input": 5})
        assert bad.status_code == 422 and "input: a number" in bad.text
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    finally:
        server.stop()
