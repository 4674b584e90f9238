"""data=image_folder: folders of PNG / JPEG files, decoded with Pillow item by item.

The bar: scikit-learn's digits written as PNG files into class folders train with
`model=cnn` to at least 0.97 test accuracy (slow). The default tests use small folders.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_metrics, train_in_process
from PIL import Image
from sklearn.datasets import load_digits

from trainlab.app.early_checks import check_early
from trainlab.app.predict import Predictor, predict_command
from trainlab.components.data.image_files import list_image_folder
from trainlab.components.data.image_folder import load_image_folder
from trainlab.errors import TrainlabError

CPU = torch.device("cpu")


def write_digits(root: Path, count: int | None = None, colour: bool = False) -> Path:
    """The first `count` digits (all: None) as PNGs in root/<class>/<n>.png."""
    digits = load_digits()
    images, labels = digits.images[:count], digits.target[:count]
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * 255 / 16).round().astype(np.uint8)
        picture = Image.fromarray(pixels, "L")
        (picture.convert("RGB") if colour else picture).save(folder / f"{index:04d}.png")
    return root


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("images") / "digits", count=200)


def load(path: Path, **options) -> object:
    return load_image_folder(seed=3, path=str(path), batch_size=16, eval_batch_size=64, **options)


def test_a_folder_of_class_folders_is_split_and_normalised_on_the_training_split(
    small_folder, tmp_path
) -> None:
    data = load(small_folder)
    info = data.info
    assert (info.task, info.input_kind, info.input_shape) == ("multiclass", "image", (1, 8, 8))
    assert info.class_names == [str(c) for c in range(10)] and info.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (139, 31, 30)
    # The stored statistics are those of the training images' pixels in [0, 1].
    pixels = torch.stack([data.train[i][0] for i in range(len(data.train))]).double() / 255
    settings = json.loads(data.files["image_folder.json"])
    assert settings["mean"] == pytest.approx([pixels.mean().item()], abs=1e-9)
    assert settings["std"] == pytest.approx([pixels.std(unbiased=False).item()], abs=1e-9)
    batch, _ = next(iter(data.stream_to(CPU).eval_batches("train")))
    assert batch.dtype == torch.float32 and abs(batch.mean().item()) < 0.2
    data.save(tmp_path)
    assert json.loads((tmp_path / "image_folder.json").read_text()) == settings


def test_batches_are_the_same_for_0_and_2_workers_and_a_resumed_epoch(small_folder) -> None:
    augment = {"shift": 1, "flip": True, "noise": 0.1}
    batches = {}
    for workers in (0, 2):
        data = load(small_folder, augment=augment, num_workers=workers).stream_to(CPU)
        train = data.train_batches(seed=3)
        batches[workers] = [[b for pair in train.epoch(e) for b in pair] for e in (0, 1)]
        resumed = [b for pair in train.epoch(1, start=4) for b in pair]
        assert all(torch.equal(a, b) for a, b in zip(resumed, batches[workers][1][8:], strict=True))
    for a, b in zip(batches[0], batches[2], strict=True):
        assert len(a) == len(b) == 18  # 139 images in batches of 16: 9 batches
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(batches[0][0][0], batches[0][1][0])  # another order each epoch


def test_split_folders_colour_and_resizing(tmp_path) -> None:
    root = tmp_path / "pets"
    write_digits(root / "train", count=100)
    write_digits(root / "test", count=20, colour=True)  # colour anywhere: 3 channels
    data = load(root, image_size=[12, 10])
    assert data.info.input_shape == (3, 12, 10)
    assert len(data.test) == 20 and len(data.train) + len(data.val) == 100  # val from train
    image, label = data.test[0]
    assert image.shape == (3, 12, 10) and image.dtype == torch.uint8 and label == 0
    gray = load(root, channels=1, mean=[0.5], std=[0.25])
    assert gray.info.input_shape == (1, 8, 8)
    assert json.loads(gray.files["image_folder.json"])["mean"] == [0.5]


def bad_folder(tmp_path: Path, case: str) -> Path:
    root = tmp_path / "images"
    if case == "missing":
        return root
    if case == "file":
        root.write_bytes(b"x")
        return root
    root.mkdir()
    if case == "empty":
        return root
    if case == "no_class_folders":
        Image.new("L", (4, 4)).save(root / "a.png")
    elif case == "class_without_images":
        (root / "cat").mkdir()
        Image.new("L", (4, 4)).save(root / "cat" / "a.png")
        (root / "dog").mkdir()
        (root / "dog" / "notes.txt").write_text("no image")
    elif case == "val_without_train":
        (root / "val" / "cat").mkdir(parents=True)
    elif case == "unknown_class_in_test":
        for split, name in (("train", "cat"), ("train", "dog"), ("test", "cow")):
            (root / split / name).mkdir(parents=True)
            Image.new("L", (4, 4)).save(root / split / name / "a.png")
    elif case == "split_and_class_folders":
        for name in ("train/cat", "dog"):
            (root / name).mkdir(parents=True)
            Image.new("L", (4, 4)).save(root / name / "a.png")
    return root


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "data.path={root}: folder not found (looked in {root}); point it at a folder"),
        ("file", "data.path={root} is a file, not a folder; it needs one subfolder per class"),
        ("empty", "data.path={root} is an empty folder; it needs one subfolder per class"),
        (
            "no_class_folders",
            "data.path={root} has no class subfolders (it holds 1 image file(s) directly); "
            "it needs one subfolder per class",
        ),
        (
            "class_without_images",
            "data.path: the class folder {root}/dog holds no images (.png, .jpg, .jpeg); "
            "add images or remove the folder",
        ),
        ("val_without_train", "data.path={root} has val/ but no train/; add train/"),
        (
            "unknown_class_in_test",
            "data.path: {root}/test has class folder(s) cow that train/ lacks (train/ has: "
            "cat, dog); every class needs training images",
        ),
        (
            "split_and_class_folders",
            "data.path={root} mixes split folders (train/, val/, test/) with other folders (dog)",
        ),
    ],
)
def test_a_bad_folder_is_one_line_before_torch_is_needed(tmp_path, case, message) -> None:
    root = bad_folder(tmp_path, case)
    with pytest.raises(TrainlabError) as caught:
        if case == "missing":  # through the early checks, as the command runs them
            from conftest import compose_config

            from trainlab.app.config import validate

            check_early(validate(compose_config("data=image_folder", f"data.path={root}")))
        list_image_folder(root)
    text = str(caught.value)
    assert message.format(root=root) in text and "\n" not in text, text


def test_unreadable_images_and_mixed_sizes_name_the_files(tmp_path) -> None:
    root = write_digits(tmp_path / "digits", count=80)
    broken = root / "3" / "0003.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(TrainlabError) as caught:
        load(root)
    assert str(caught.value).startswith(f"cannot read the image {broken} (")
    assert str(caught.value).endswith("; fix or remove it")

    # A PNG whose header is fine but whose pixels are cut off: found by the loading pass.
    whole = root / "4" / "0004.png"
    broken.write_bytes(whole.read_bytes())
    data = whole.read_bytes()
    cut = root / "5" / "0005.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:60])
    with pytest.raises(TrainlabError) as caught:
        load(root, num_workers=2)
    assert f"cannot read the image {cut} (" in str(caught.value)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    whole.write_bytes(data)

    cut.unlink()
    Image.new("L", (10, 9)).save(root / "5" / "big.png")
    with pytest.raises(TrainlabError) as caught:
        load(root)
    assert str(caught.value) == (
        f"images of different sizes: {root / '0' / '0000.png'} is 8x8, {root / '5' / 'big.png'} "
        "is 10x9 (width x height); set data.image_size=[H,W] to resize them all, e.g. "
        "data.image_size=[8,8]"
    )
    assert load(root, image_size=[8, 8]).info.input_shape == (1, 8, 8)


def test_train_then_predict_a_folder_and_a_file(small_folder, tmp_path) -> None:
    done = train_in_process(
        "data=image_folder",
        f"data.path={small_folder}",
        "model=cnn",
        "model.channels=[8]",
        "trainer.max_epochs=1",
        "logger=none",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "outputs" / "runs" / "in-process"
    assert read_metrics(run_dir)["task"] == "multiclass"
    output = predict_command(
        [f"run={run_dir}", f"input={small_folder / '7'}", f"output={tmp_path / 'p.csv'}"]
    )
    import pandas as pd

    table = pd.read_csv(output)
    assert list(table.columns[:3]) == ["row", "file", "prediction"]
    assert len(table) == len(list((small_folder / "7").iterdir()))
    one = Predictor.load(run_dir)
    first = small_folder / "7" / sorted(p.name for p in (small_folder / "7").iterdir())[0]
    assert one.predict([first])["prediction"].iloc[0] == str(table["prediction"].iloc[0])
    with pytest.raises(TrainlabError, match=r"the folder holds no images"):
        one.read(tmp_path / "outputs")


# --- slow: the bar, and a real process killed and resumed ---------------------------------
@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("bar") / "digits")


@pytest.mark.slow
def test_digits_as_png_files_reach_097_test_accuracy_with_the_cnn(digits_folder, tmp_path) -> None:
    done = train_in_process(
        "data=image_folder",
        f"data.path={digits_folder}",
        "model=cnn",
        "trainer.max_epochs=15",
        "data.num_workers=2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "outputs" / "runs" / "in-process"
    assert read_metrics(run_dir)["test"]["test/acc"] >= 0.97


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_auto_is_bitwise_identical_with_2_workers(
    digits_folder, tmp_path
) -> None:
    from test_resume import COMMON, Run, assert_same_run, only_run

    from trainlab.engine.checkpoint import load_checkpoint

    options = (
        "data=image_folder",
        f"data.path={digits_folder}",
        "data.num_workers=2",
        "data.augment.shift=1",
        "data.augment.noise=0.05",
        "model=cnn",
        "model.channels=[8,16]",
        "model.dropout=0.2",
        *COMMON,
    )
    reference = Run(tmp_path / "reference", *options)
    killed = Run(tmp_path / "killed", *options)
    killed.wait_for("step_28.pt")
    killed.process.send_signal(signal.SIGKILL)
    killed.wait()
    run_dir = only_run(killed.root)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["position"]["batch_in_epoch"] > 0
    assert Run(killed.root, *options, "resume=auto").finish() == run_dir
    assert_same_run(run_dir, reference.finish())


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_with_workers(digits_folder, tmp_path) -> None:
    from test_resume import COMMON, Run, only_run

    from trainlab.engine.checkpoint import load_checkpoint

    options = (
        "data=image_folder",
        f"data.path={digits_folder}",
        "data.num_workers=2",
        "model=cnn",
        "model.channels=[8]",
        *COMMON,
    )
    stopped = Run(tmp_path, *options)
    stopped.wait_for("step_14.pt")
    stopped.process.send_signal(signal.SIGTERM)
    assert stopped.wait() == 143
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith("stopped: SIGTERM at step ") and "resume=auto" in line, line
    last = load_checkpoint(only_run(tmp_path) / "checkpoints" / "last.pt")
    assert last["position"]["global_step"] >= 14


@pytest.mark.slow  # a benchmark run in its own process
def test_the_image_folder_bench_reports_every_figure(tmp_path) -> None:
    from test_bench import bench

    report = bench(
        tmp_path, "--image-folder", *("--image-count", "200", "--rounds", "1", "--warmup", "0")
    )
    result = report["image_folder"]
    assert result["images"] == 200 and result["workers"] == 2
    assert set(result["samples_per_s"]) == {"trainlab", "handwritten"}
    assert all(v > 0 for v in result["samples_per_s"].values())
    assert result["ratio"] > 0 and result["first_batch_s"]["trainlab"] > 0
    assert "ratio trainlab / handwritten" in report["printed"]
