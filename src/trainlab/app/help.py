"""`trainlab --help`: the config groups and their options, read from the config folders.

Hydra's own help renders every option of every group (a deep copy of the config repository
each); listing the files is enough to say what can be chosen, and takes milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

from trainlab.errors import ConfigError

SHIPPED = Path(__file__).resolve().parent.parent / "configs"
OPTIONAL_GROUPS = ("experiment", "hparams_search", "regularization", "debug")

USAGE = """\
usage: trainlab [group=option ...] [key=value ...]     train (python train.py, python -m trainlab)
       trainlab -m key=a,b ...                          sweep: one run per combination
       trainlab predict run=<run folder> input=<file>   predict with a trained run
       trainlab compress run=<run folder> method=quantize|prune   a smaller model, measured
       trainlab explain run=<run folder>                attributions: CSV, chart, TensorBoard
       trainlab export run=<run folder> format=onnx     export a run, verified (--help)
       trainlab serve run=<run folder> [port=8000]      serve a trained run over HTTP
       trainlab --config-dir DIR ...                    your own configs: DIR/<group>/<name>.yaml
       trainlab --cfg job [overrides]                   print the composed config, run nothing
       trainlab --hydra-help                            Hydra's own flags

Runs land in outputs/runs/<date>_<time>/; view them with: tensorboard --logdir outputs
"""


def option_values(argv: list[str], *names: str) -> list[str]:
    """The values given to the flag `names` (`--flag value` or `--flag=value`), in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(tuple(f"{name}=" for name in names)):
            values.append(arg.split("=", 1)[1])
    return values


def config_dirs(argv: list[str]) -> list[Path]:
    """The shipped configs, then any --config-dir / -cd given on the command line."""
    return [SHIPPED, *(Path(d) for d in option_values(argv, "--config-dir", "-cd"))]


def check_config_dirs(argv: list[str]) -> None:
    """A --config-dir that is not a folder is an error before Hydra starts."""
    for folder in config_dirs(argv)[1:]:
        if not folder.is_dir():
            raise ConfigError(
                f"--config-dir {folder}: no such folder; give the folder that holds your "
                "<group>/<option>.yaml files, absolute or relative to where you run trainlab"
            )


def group_options(dirs: list[Path]) -> dict[str, list[str]]:
    groups: dict[str, set[str]] = {}
    for root in dirs:
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            names = {f.stem for f in folder.glob("*.yaml")}
            if names and folder.name != "hydra":
                groups.setdefault(folder.name, set()).update(names)
    return {group: sorted(names) for group, names in sorted(groups.items())}


def defaults(argv: list[str]) -> dict[str, str]:
    """The option each group gets by default: train.yaml's defaults list, changed by the
    primary config named with --config-name (its `override group: option` entries)."""
    chosen = _defaults_list(SHIPPED / "train.yaml")
    for name in option_values(argv, "--config-name", "-cn"):
        for root in reversed(config_dirs(argv)):
            if (root / f"{name}.yaml").is_file():
                chosen.update(_defaults_list(root / f"{name}.yaml"))
                break
    return chosen


def _defaults_list(path: Path) -> dict[str, str]:
    import yaml

    chosen: dict[str, str] = {}
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = key.removeprefix("optional ").removeprefix("override ").strip()
                chosen[group] = str(value)
    return chosen


def print_help(argv: list[str]) -> None:
    chosen = defaults(argv)
    lines = [USAGE, "Config groups (pick one with group=option; * is the default):"]
    for group, names in group_options(config_dirs(argv)).items():
        options = " ".join(f"{n}*" if chosen.get(group) == n else n for n in names)
        note = " (optional)" if group in OPTIONAL_GROUPS else ""
        lines.append(f"  {group}{note}: {options}")
    lines.append(
        "\nChange a field with group.field=value (e.g. optim.lr=3e-4 trainer.max_epochs=50);"
        "\nsee every field with `trainlab --cfg job`, and README.md for what each one does."
    )
    print("\n".join(lines))


def print_predict_help() -> None:
    """`trainlab predict --help`: the predict module's own text, read without importing it
    (it imports torch and pandas)."""
    source = (Path(__file__).resolve().parent / "predict.py").read_text()
    tree = ast.parse(source)
    usage = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(target, "id", None) == "USAGE" for target in node.targets)
        and isinstance(node.value, ast.Constant)
    )
    print(f"{(ast.get_docstring(tree) or '').strip()}\n\n{usage}")
