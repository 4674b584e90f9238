"""`trainlab --help`: the config groups and their options, read from the config folders.

Hydra's own help renders every option of every group (a deep copy of the config repository
each); listing the files is enough to say what can be chosen, and takes milliseconds.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "configs"
OPTIONAL_GROUPS = ("experiment", "hparams_search", "regularization", "debug")

USAGE = """\
usage: trainlab [group=option ...] [key=value ...]     train (python train.py, python -m trainlab)
       trainlab -m key=a,b ...                          sweep: one run per combination
       trainlab predict run=<run folder> input=<file>   predict with a trained run
       trainlab --config-dir DIR ...                    your own configs: DIR/<group>/<name>.yaml
       trainlab --cfg job [overrides]                   print the composed config, run nothing
       trainlab --hydra-help                            Hydra's own flags

Runs land in outputs/runs/<date>_<time>/; view them with: tensorboard --logdir outputs
"""


def config_dirs(argv: list[str]) -> list[Path]:
    """The shipped configs, then any --config-dir / -cd given on the command line."""
    dirs = [SHIPPED]
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith(("--config-dir=", "-cd=")):
            dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


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


def defaults(root: Path) -> dict[str, str]:
    """The option train.yaml's defaults list picks for each group."""
    import yaml

    chosen: dict[str, str] = {}
    for entry in yaml.safe_load((root / "train.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                chosen[key.removeprefix("optional ")] = str(value)
    return chosen


def print_help(argv: list[str]) -> None:
    chosen = defaults(SHIPPED)
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
