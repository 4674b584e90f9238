"""The README's "Use from Python" and docs/extending.md's examples run as printed.

A fenced block whose first line is `# <path>` is a file to write; any other ```python block
is run in-process and any ```bash line runs in a shell, all in a fresh folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, cli_env

BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
FILE = re.compile(r"# ([\w/]+\.(?:py|yaml))\b")


def section(title: str) -> str:
    """The text under the README heading `## {title}`, up to the next `## ` heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, code, file path or None) of each fenced block in `text`."""
    found = []
    for language, code in BLOCK.findall(text):
        path = FILE.match(code.splitlines()[0])
        found.append((language, code, path.group(1) if path else None))
    return found


def test_use_from_python_runs_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    examples = blocks(section("Use from Python"))
    assert [language for language, _, _ in examples] == ["python", "python"]
    for _, code, _ in examples:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.splitlines()
    accuracy = float(printed[0].removeprefix("val/acc "))
    assert accuracy > 0.9
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    objective, test_accuracy, printed_dir = printed[1].split()
    assert float(objective) == metrics["objective"]["value"] and printed_dir == str(run_dir)
    assert float(test_accuracy) == metrics["test"]["test/acc"] and metrics["epochs"] == 2


def test_extending_trainlab_runs_as_printed(tmp_path: Path) -> None:
    """The user's package and configs, written as printed, train from the command line in
    their folder, with no PYTHONPATH pointing there."""
    examples = blocks((ROOT / "docs" / "extending.md").read_text())
    commands = []
    for language, code, path in examples:
        if path is not None:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(code)
        else:
            assert language == "bash", code
            commands += [line for line in code.splitlines() if line.strip()]
    assert {p for _, _, p in examples if p} >= {"mypkg/parts.py", "conf/mine.yaml"}
    env = cli_env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the `trainlab` command
    for command in commands:
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert "epoch 3: val/acc" in done.stdout + done.stderr  # the user's callback printed
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == len(commands) == 2
    for run_dir in runs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["epochs"] == 3 and metrics["task"] == "binary"
        assert metrics["val"]["val/acc"] > 0.5
