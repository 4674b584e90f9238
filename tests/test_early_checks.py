"""Data-level mistakes found before torch, scikit-learn or pandas is imported: a missing
file, a header without the named column, a GPU this machine lacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, cli_env

from trainlab.app.early_checks import (
    GPU_DRIVER_FILES,
    check_device,
    check_table_file,
    check_text_file,
    header,
)
from trainlab.components.data.schemas import TableFileSchema, TextSchema
from trainlab.errors import ConfigError, TrainlabError

HAS_GPU_DRIVER = any(os.path.exists(f) for f in GPU_DRIVER_FILES)
HEAVY = ("torch", "sklearn", "pandas")


def table(path: Path | str, target: str | None = "label", **settings) -> TableFileSchema:
    return TableFileSchema(path=str(path), target=target, **settings)


@pytest.fixture
def pets(tmp_path: Path, monkeypatch) -> Path:
    """A folder to run in, holding pets.csv (weight,color,label) and pets.tsv."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pets.csv").write_text("weight,color,label\n1.5,red,cat\n2.0,blue,dog\n")
    (tmp_path / "pets.tsv").write_text("weight\tcolor\tlabel\n1.5\tred\tcat\n")
    return tmp_path


TABLE_MISTAKES = [
    (dict(path="missing.csv"), "data.path=missing.csv: file not found (looked in "),
    (dict(path="missing.parquet"), "data.path=missing.parquet: file not found"),
    (dict(path="."), "data.path=.: is a folder, not a file; check the path"),
    (dict(path="empty.csv"), "data.path=empty.csv: the file is empty"),
    (dict(target="lable"), "data.target: no column 'lable' in data.path=pets.csv (did you mean"),
    (dict(target="Label"), "data.target: no column 'Label' in data.path=pets.csv"),
    (dict(target=None), "data.target is not set: name the column to predict, e.g. data.target="),
    (dict(categorical=["colour"]), "data.categorical: no column 'colour' in data.path=pets.csv"),
    (dict(numeric=["wieght"]), "data.numeric: no column 'wieght' (did you mean"),
    (dict(drop_columns=["id"]), "data.drop_columns: no column 'id' in data.path=pets.csv"),
    (dict(path="pets.tsv", target="lable"), "data.target: no column 'lable' in data.path=pets.tsv"),
]


@pytest.mark.parametrize(("settings", "words"), TABLE_MISTAKES, ids=[w for _, w in TABLE_MISTAKES])
def test_a_table_mistake_is_found_from_the_header(pets: Path, settings, words) -> None:
    (pets / "empty.csv").write_text("")
    settings = {"path": "pets.csv", **settings}
    with pytest.raises(TrainlabError) as caught:
        check_table_file(table(**settings))
    line = str(caught.value)
    for part in words.split(" (did you mean"):
        assert part.rstrip() in line, line


def test_a_good_table_passes_and_what_needs_pandas_is_left_to_it(pets: Path) -> None:
    check_table_file(table("pets.csv", categorical=["color"], numeric=["weight"]))
    check_table_file(table(pets / "pets.tsv"))  # an absolute path
    (pets / "bom.csv").write_text("\ufeffweight,label\n1,cat\n", encoding="utf-8")
    check_table_file(table("bom.csv"))
    (pets / "quoted.csv").write_text('"weight, kg","the label"\n1,cat\n')
    check_table_file(table("quoted.csv", target="the label"))
    # Names pandas makes up or changes, and files only pandas reads: not judged here.
    for name, text in [("dup.csv", "a,a,label\n"), ("blank.csv", ",a,label\n")]:
        (pets / name).write_text(text)
        assert header(pets / name) is None
    (pets / "latin.csv").write_bytes("na\xefve,label\n".encode("latin-1"))
    assert header(pets / "latin.csv") is None
    (pets / "gz.csv.gz").write_bytes(b"\x1f\x8b not really")
    check_table_file(table("gz.csv.gz", target="anything"))


def test_a_wide_header_is_listed_short(pets: Path) -> None:
    names = [f"feature_{i}" for i in range(500)]
    (pets / "wide.csv").write_text(",".join(names) + "\n" + ",".join("1" * 500) + "\n")
    with pytest.raises(TrainlabError) as caught:
        check_table_file(table("wide.csv", target="label"))
    assert str(caught.value).endswith("feature_19, ... (500 in all)")
    assert len(str(caught.value)) < 400


def test_a_text_mistake_is_found_from_the_header(pets: Path) -> None:
    (pets / "reviews.csv").write_text("review,label\ngood,pos\n")
    with pytest.raises(
        TrainlabError,
        match=r"data\.path=nope\.csv: file not found \(looked in .*nope\.csv\); point",
    ):
        check_text_file(TextSchema(path="nope.csv"))
    with pytest.raises(TrainlabError, match=r"data\.text_column='text' is not a column of"):
        check_text_file(TextSchema(path="reviews.csv"))
    with pytest.raises(TrainlabError, match=r"data\.label_column='lable' .* \(did you mean"):
        check_text_file(TextSchema(path="reviews.csv", text_column="review", label_column="lable"))
    check_text_file(TextSchema(path="reviews.csv", text_column="review"))


@pytest.mark.skipif(HAS_GPU_DRIVER, reason="this machine has a GPU driver: torch decides")
def test_cuda_without_a_gpu_driver_is_refused_without_torch() -> None:
    for device in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ConfigError, match=f"trainer.device={device} but this machine has no"):
            check_device(device)


def test_hidden_gpus_and_mps_off_a_mac_are_refused(monkeypatch) -> None:
    check_device("cpu")
    check_device("auto")
    if sys.platform != "darwin":
        with pytest.raises(ConfigError, match=r"trainer\.device=mps needs a Mac"):
            check_device("mps")
    if HAS_GPU_DRIVER and sys.platform.startswith("linux"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES hides every GPU"):
            check_device("cuda")


# One command of each kind in a real process: the line, and nothing heavy imported.
BEFORE_TORCH = [
    (["data=csv", "data.path=missing.csv", "data.target=label"], "file not found"),
    (["data=csv", "data.path=pets.csv", "data.target=lable"], "no column 'lable'"),
    (["data=text", "data.path=pets.csv"], "data.text_column='text' is not a column"),
]
if not HAS_GPU_DRIVER:
    BEFORE_TORCH.append((["trainer.device=cuda"], "trainer.device=cuda but this machine"))


@pytest.mark.parametrize(("args", "words"), BEFORE_TORCH, ids=[a[-1] for a, _ in BEFORE_TORCH])
def test_the_command_refuses_before_importing_torch(tmp_path: Path, args, words) -> None:
    (tmp_path / "pets.csv").write_text("weight,color,label\n1.5,red,cat\n")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "train.py"), *args],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    imported = {
        line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if "|" in line
    }
    assert "trainlab.app.early_checks" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets.csv"]  # no outputs/
