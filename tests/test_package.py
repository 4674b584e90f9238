"""trainlab as an installed package: the wheel carries every config and the Optuna sweeper
plugin, and the `trainlab` command it installs trains from an empty folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, read_metrics
from test_cli import write_user_project

from trainlab.engine.checkpoint import load_checkpoint

SOURCES = ROOT / "src"
PIP = (sys.executable, "-m", "pip", "-q")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel --no-deps .` builds, from a copy of the checkout (a build writes
    build/ and *.egg-info/ beside the sources) and with the installed setuptools (offline)."""
    tree = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(SOURCES, tree / "src", ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(tree)],
        check=True,
        capture_output=True,
        text=True,
    )
    (path,) = dist.glob("trainlab-*.whl")
    return path


def test_the_wheel_holds_every_config_module_and_the_sweeper_plugin(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        path.relative_to(SOURCES).as_posix()
        for pattern in ("trainlab/**/*.py", "trainlab/configs/**/*.yaml", "hydra_plugins/**/*.py")
        for path in SOURCES.glob(pattern)
    }
    assert len([n for n in shipped if n.endswith(".yaml")]) > 50
    assert "hydra_plugins/trainlab_optuna_sweeper/sweeper.py" in shipped
    assert shipped - names == set()
    # hydra_plugins is a namespace shared with the launchers' plugins: no __init__.py of ours.
    assert "hydra_plugins/__init__.py" not in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]\ntrainlab = trainlab.app.cli:cli" in text


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the wheel (no dependencies): a .pth file lends it this venv's
    site-packages for torch, Hydra and the rest, but not the editable trainlab (a .pth
    file's folders are added to sys.path without reading their own .pth files)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "lent_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def user_env() -> dict[str, str]:
    """A user's shell: nothing of this checkout on PYTHONPATH."""
    drop = ("PYTHONPATH", "HYDRA_FULL_ERROR", "TRAINLAB_VERBOSE", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.mark.slow
def test_the_installed_command_trains_from_an_empty_folder(installed: Path, tmp_path) -> None:
    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=600
        )

    where = command(
        str(installed / "bin" / "python"), "-c", "import trainlab; print(trainlab.__file__)"
    )
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr

    trainlab = str(installed / "bin" / "trainlab")
    result = command(trainlab, "debug=fast")
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert read_metrics(run_dir)["epochs"] == 1
    assert (run_dir / "checkpoints" / "best.pt").is_file()

    help_text = command(trainlab, "--help").stdout
    assert "  model: cnn mlp* rnn transformer" in help_text

    # A user's own model class, from their own project folder, with no PYTHONPATH.
    write_user_project(tmp_path)
    user = command(trainlab, "--config-dir", "conf", "model=tiny", "debug=fast", "name=mine")
    assert user.returncode == 0, user.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*_mine")
    weights = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    assert weights["net.1.weight"].shape == (24, 64)

    # The Optuna sweeper is found as a Hydra plugin in the installed wheel.
    search = command(
        trainlab, "-m", "hparams_search=optuna_mlp", "hydra.sweeper.n_trials=2", "debug=fast"
    )
    assert search.returncode == 0, search.stderr
    (study,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert (study / "optuna.db").is_file()
