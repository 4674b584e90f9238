"""The package's folders are its layers, and imports point down: app -> components -> engine.

The engine (the loop, checkpoints, seeding, runtime settings) imports neither the
components nor the application nor Hydra; the components do not import the application.
Imports under `if TYPE_CHECKING:` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "trainlab"

# layer -> module prefixes it must not import
FORBIDDEN = {
    "engine": ("trainlab.app", "trainlab.components", "hydra", "omegaconf"),
    "components": ("trainlab.app",),
}


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import that runs, wherever it sits (functions included)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layer_files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer):
    assert layer_files(layer), f"no modules found under {layer}/"
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        for path in layer_files(layer)
        for line, module in runtime_imports(path)
        if module.startswith(FORBIDDEN[layer])
    ]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The check itself can fail: a module importing upwards is reported, at any depth."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from trainlab.app import cli\n"
        "def f():\n    import hydra\n    from trainlab.app.runs import holds_run\n"
    )
    assert runtime_imports(module) == [(1, "typing"), (5, "hydra"), (6, "trainlab.app.runs")]
