"""The first check of any data file a user names: it exists, is a file, and is not empty.

Torch- and pandas-free, so the command runs it before the heavy imports
(`trainlab.app.early_checks`) and the loaders and `predict` run the same check, with the
same words, when they read the file.
"""

from __future__ import annotations

from pathlib import Path

from trainlab.errors import TrainlabError


def check_file(path: Path, what: str, fix: str = "check the path", needs: str = "") -> None:
    """An existing, non-empty file at `path` (the setting `what` names it), or one line
    saying what is there instead; `fix` ends a missing-file line, `needs` an empty-file one."""
    if not path.is_file():
        where = f" (looked in {path.resolve()})" if not path.is_absolute() else ""
        problem = "is a folder, not a file" if path.is_dir() else f"file not found{where}"
        raise TrainlabError(f"{what}={path}: {problem}; {fix}")
    if path.stat().st_size == 0:
        needed = f"; it needs {needs}" if needs else ""
        raise TrainlabError(f"{what}={path}: the file is empty{needed}")


# What a text data file (`data=text`) must be: the end of its missing- and empty-file lines.
TEXT_FIX = "point data.path at a CSV file with a text column and a label column"
TEXT_NEEDS = "a header line (e.g. text,label) and rows"
