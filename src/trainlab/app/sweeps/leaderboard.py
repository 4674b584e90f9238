"""A leaderboard of runs: one row per run folder, sorted by the objective.

Written as `leaderboard.csv` and `leaderboard.md` into the folder and printed. Hydra calls
`Leaderboard.on_multirun_end` when a sweep ends; `scripts/leaderboard.py FOLDER` builds
the same table for any folder of runs (a sweep that was stopped, say).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trainlab.components.callbacks.monitor import resolve_mode
from trainlab.engine.distributed import is_main_process

log = logging.getLogger(__name__)

# Overrides that say where a run was written, not what it tried.
PLUMBING = ("paths.", "hydra.", "+optuna", "++optuna")


def find_runs(folder: Path) -> list[Path]:
    """Run folders under `folder` (those Hydra wrote a `.hydra/config.yaml` into)."""
    return sorted(p.parent.parent for p in folder.rglob(".hydra/config.yaml"))


def read_run(run_dir: Path, root: Path) -> dict[str, Any]:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    row: dict[str, Any] = {
        "run": str(run_dir.relative_to(root)) if run_dir != root else ".",
        "overrides": " ".join(o for o in overrides or [] if not o.startswith(PLUMBING)),
    }
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        return {**row, "status": "no result"}
    metrics = json.loads(metrics_file.read_text())
    row.update(
        status="complete",
        objective=metrics["objective"]["name"],
        value=metrics["objective"]["value"],
        epochs=metrics.get("epochs"),
        wall_time_s=metrics.get("wall_time_s"),
    )
    row.update(metrics.get("val", {}))
    row.update(metrics.get("test", {}))
    return row


def build_leaderboard(folder: str | Path) -> list[dict[str, Any]]:
    """Rows for every run under `folder`, best first; runs without a result last."""
    folder = Path(folder)
    rows = [read_run(run, folder) for run in find_runs(folder)]
    done = [r for r in rows if r["status"] == "complete"]
    if done:
        descending = resolve_mode(done[0]["objective"], "auto") == "max"
        done.sort(key=lambda r: r["value"], reverse=descending)
    rows = done + [r for r in rows if r["status"] != "complete"]
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank if row["status"] == "complete" else None
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """A compact table: rank, overrides, objective, the test metric of the same name."""
    if not rows:
        return "no runs found\n"
    objective = next((r["objective"] for r in rows if r["status"] == "complete"), "objective")
    test_name = objective.replace("val/", "test/")
    head = ["rank", "run", "overrides", objective, test_name, "epochs", "wall time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.get("rank") or "-",
            r["run"],
            r["overrides"] or "(defaults)",
            _number(r.get("value")),
            _number(r.get(test_name)),
            r.get("epochs", "-"),
            _number(r.get("wall_time_s"), 1),
        ]
        if r["status"] != "complete":
            cells[3] = r["status"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = [
        "rank",
        "run",
        "overrides",
        "status",
        "objective",
        "value",
        "epochs",
        "wall_time_s",
    ]
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_leaderboard(folder: str | Path) -> str:
    """Write leaderboard.csv and leaderboard.md into `folder`; return the Markdown."""
    folder = Path(folder)
    rows = build_leaderboard(folder)
    markdown = to_markdown(rows)
    (folder / "leaderboard.csv").write_text(to_csv(rows))
    (folder / "leaderboard.md").write_text(markdown)
    return markdown


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


class Leaderboard(Callback):
    """Hydra callback: write and print the leaderboard when a sweep ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        if folder.is_dir() and is_main_process():
            markdown = write_leaderboard(folder)
            print(f"\nleaderboard ({folder / 'leaderboard.md'}):\n{markdown}", flush=True)
