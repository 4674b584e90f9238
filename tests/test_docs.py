"""The documentation keeps its promises: docs/configs.md lists every option of every config
group with an example, the README stays within its size and links the reference, and every
`python train.py` / `trainlab` command in both composes and passes validation."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import CONFIG_DIR, ROOT
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from trainlab.app.cli import COMMANDS
from trainlab.app.config import register_resolvers, validate

README = ROOT / "README.md"
CONFIGS_DOC = ROOT / "docs" / "configs.md"
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")


def test_docs_configs_lists_every_option_with_an_example() -> None:
    text = CONFIGS_DOC.read_text()
    options = [(g, p.stem) for g in GROUPS for p in sorted((CONFIG_DIR / g).glob("*.yaml"))]
    assert len(options) > 40
    missing = [f"{g}={o}" for g, o in options if f"{g}={o}" not in text]
    assert not missing, f"docs/configs.md does not mention: {missing}"


def test_the_readme_is_short_has_contents_and_links_the_reference() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 20 * 1024
    assert "**Contents:**" in text
    assert "(docs/configs.md)" in text and "(docs/speed.md)" in text
    headings = {h.strip() for h in re.findall(r"^## (.+)$", text, re.M)}
    for anchor in re.findall(r"\]\(#([a-z0-9_-]+)\)", text):
        slugs = {re.sub(r"[^a-z0-9_ -]", "", h.lower()).replace(" ", "-") for h in headings}
        assert anchor in slugs, anchor


def commands(text: str) -> list[list[str]]:
    """The override lists of every train command in the ```bash blocks of `text`."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("  #")[0])
            if words[:2] == ["python", "train.py"]:
                words = words[2:]
            elif words[:3] == ["python", "-m", "trainlab"]:
                words = words[3:]
            elif words[:1] == ["trainlab"]:
                words = words[1:]
            else:
                continue
            if words[:1] and words[0] in COMMANDS and words[0] != "train":
                continue  # a subcommand's key=value arguments are not overrides
            if any(w.startswith("--") for w in words):
                continue
            found.append(words)
    return found


def first_of_sweep(override: str) -> str:
    """One job's value of a sweep override: `optim.lr=1e-3,1e-2` -> `optim.lr=1e-3`."""
    key, value = override.split("=", 1)
    if value.startswith("range("):
        return f"{key}={value[len('range(') :].split(',')[0]}"
    if value.startswith("tag("):  # a search space: the sweeper's own syntax
        return ""
    if value.startswith("["):
        return f"{key}={value.split('],')[0].rstrip(']')}]"
    return f"{key}={value.split(',')[0]}"


def documented_commands() -> list[tuple[str, ...]]:
    """Each distinct train command of the README and docs/configs.md, as its overrides."""
    found = [tuple(words) for path in (README, CONFIGS_DOC) for words in commands(path.read_text())]
    assert len(found) > 30
    return list(dict.fromkeys(found))


@pytest.mark.parametrize("words", documented_commands(), ids=" ".join)
def test_every_train_command_in_the_docs_composes_and_validates(words: tuple[str, ...]) -> None:
    register_resolvers()
    sweep = "-m" in words
    overrides = [first_of_sweep(w) if sweep and "=" in w else w for w in words if w != "-m"]
    overrides = [o for o in overrides if o]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*overrides, "paths.output_dir=unused"],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
