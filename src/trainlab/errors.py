"""Errors a user can fix, and how any error becomes the one line a user reads."""

from __future__ import annotations

import difflib
import re
import sys
from typing import Any, NoReturn


class TrainlabError(Exception):
    """A problem with the user's input (config, data, checkpoint): shown as one line."""

    label = "error"  # the word the line starts with
    exit_code = 2


class ConfigError(TrainlabError):
    """A config value that is missing, mistyped or out of range."""


class DivergenceError(TrainlabError):
    """The loss, a gradient or the weights stopped being finite numbers."""


class Preempted(TrainlabError):
    """A stop signal (SIGTERM, SIGUSR1) ended the run early, after saving a checkpoint.

    Exit status 143 (128 + SIGTERM), what schedulers such as SLURM expect of a job that
    stopped on request and can be requeued.
    """

    label = "stopped"
    exit_code = 143

    def __init__(self, message: str, signal_name: str = "SIGTERM") -> None:
        super().__init__(message)
        self.signal_name = signal_name


# Settings that moved: an old command line gets the new name, not "unknown key".
MOVED_KEYS = {"trainer.num_workers": "data.num_workers"}


def did_you_mean(word: str, candidates: list[Any]) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def listing(names: list[str], limit: int = 20) -> str:
    """`names` joined for a line, the first `limit` of them when there are more."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def unknown_option(group: str, option: str, options: list[str]) -> str:
    """The line for a config group's option that does not exist."""
    hint = did_you_mean(option, options)
    # With a close match the line already shows the way; otherwise an example does.
    example = "" if hint else f" (e.g. {group}={options[0]})"
    return f"unknown option {group}={option}{hint}; choose one of: {listing(options)}{example}"


def one_line(ex: BaseException) -> str:
    """Describe `ex` in one line that says what is wrong and how to fix it."""
    from hydra.errors import (
        ConfigCompositionException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
    )

    # Hydra's instantiate wraps what a target raised; the user needs the original.
    while isinstance(ex, InstantiationException) and ex.__cause__ is not None:
        target = str(ex).split("'")[1] if "'" in str(ex) else "a config _target_"
        if isinstance(ex.__cause__, TrainlabError):
            ex = ex.__cause__
            break
        cause = ex.__cause__
        return (
            f"building {target} failed: {type(cause).__name__}: {_first_line(str(cause))} "
            "(check that group's settings; HYDRA_FULL_ERROR=1 shows the traceback)"
        )
    if isinstance(ex, TrainlabError):
        return str(ex)
    if isinstance(ex, OSError) and ex.filename is not None:
        return (
            f"cannot write or read {ex.filename}: {ex.strerror}; check the path, or point "
            "paths.root_dir at a writable folder (e.g. paths.root_dir=outputs)"
        )
    if isinstance(ex, MissingConfigException) and ex.options:
        group, _, option = (ex.missing_cfg_file or "").rpartition("/")
        return unknown_option(group, option, sorted(ex.options))
    cause = ex.__cause__
    if isinstance(ex, ConfigCompositionException) and isinstance(
        cause, (ConfigKeyError, ConfigAttributeError)
    ):
        key = getattr(cause, "full_key", None) or str(getattr(cause, "key", ""))
        if key in MOVED_KEYS:
            return f"{key} moved to {MOVED_KEYS[key]}: use {MOVED_KEYS[key]}=... instead"
        parent = getattr(cause, "parent_node", None)
        known = [str(k) for k in parent] if hasattr(parent, "keys") else []
        known = [k for k in known if not k.startswith("_") and k != "hydra"]
        prefix = key.rpartition(".")[0]
        names = [f"{prefix}.{k}" if prefix else k for k in known]
        hint = did_you_mean(key, names)
        keys = f"; keys there: {listing(names, 10)}" if names else ""
        return (
            f"unknown config key '{key}'{hint}{keys} "
            f"(use +{key}=... only to add a key a custom _target_ accepts)"
        )
    if isinstance(ex, ConfigCompositionException) and (
        line := _composition_line(str(ex), str(ex.__cause__))
    ):
        return line
    if isinstance(ex, ConfigCompositionException) and "No match in the defaults list" in str(ex):
        group = str(ex).split("'")[1] if "'" in str(ex) else str(ex)
        return (
            f"unknown config group '{group}'; groups are the folders of configs/ "
            "(data, model, loss, optim, sched, trainer, callbacks, logger, experiment, debug)"
        )
    if isinstance(ex, ValueError) and str(ex).startswith("Config group override must be"):
        return "an override lacks its key before '=': write key=value, e.g. optim.lr=0.01"
    if isinstance(ex, OverrideParseException):
        return (
            f"cannot parse the override: {_first_line(str(ex))} "
            "(write key=value, e.g. optim.lr=0.01)"
        )
    if isinstance(ex, MissingMandatoryValue) and getattr(ex, "full_key", None):
        return f"{ex.full_key} is required (its value is ???): set it, e.g. {ex.full_key}=..."
    if isinstance(ex, OmegaConfBaseException):
        key = getattr(ex, "full_key", None)
        where = f"{key}: " if key else ""
        return f"bad config value: {where}{_first_line(str(ex))}"
    if isinstance(ex, ConfigCompositionException):
        detail = f" ({_first_line(str(cause))})" if cause else ""
        return f"{_first_line(str(ex))}{detail}"
    return (
        f"{type(ex).__name__}: {_first_line(str(ex))} (set HYDRA_FULL_ERROR=1 to see the traceback)"
    )


def exit_with(ex: BaseException) -> NoReturn:
    """Print `ex` as one line on stderr and exit: status 2, or the error's own (143 for a stop)."""
    label = getattr(ex, "label", "error")
    print(f"{label}: {one_line(ex)}", file=sys.stderr)
    sys.exit(getattr(ex, "exit_code", 2))


def _composition_line(text: str, cause: str) -> str | None:
    """Hydra's words for two mistakes in an override, in a user's."""
    if found := re.match(
        r"Multiple values for (\S+)\. To override a value use 'override \S+: (.+)'", text
    ):
        group, option = found.groups()
        return (
            f"+{group}={option} adds a group that train.yaml already lists (as optional): "
            f"choose its option without the '+': {group}={option}"
        )
    if found := re.match(r"Error merging override (\+*)([^=]+)=(.*)", text):
        add, key, value = found.groups()
        if value.startswith("[") and "Cannot merge" in cause:
            return (
                f"{add}{key}={value} has the wrong type: {key} is a block of keys, not a list; "
                f"set one key at a time: {key}.<key>=..."
            )
        if value.startswith("{") and "Cannot merge" in cause:
            return f"{add}{key}={value} has the wrong type: {key} takes a list, e.g. {key}=[a,b]"
    if found := re.match(r"Could not delete from config\. '([^']+)' does not exist", text):
        key = found.group(1)
        return f"~{key} deletes a key the config does not have: check its spelling"
    if found := re.match(
        r"Could not delete from config\. The value of '([^']+)' is (.*) and not (.*)\.$", text
    ):
        key, value, given = found.groups()
        return (
            f"~{key}={given} deletes {key} only when it is {given}, and it is {value}: "
            f"write ~{key} to delete it whatever its value"
        )
    if found := re.match(r"Could not override '([^'@.]+)@([^']*)'", text):
        group, package = found.groups()
        return (
            f"{group}@{package}=... moves config group '{group}' to package '{package}', which "
            f"this config does not take: choose the option alone, e.g. {group}=<option>"
        )
    if found := re.match(r"Could not append to config\. An item is already at '([^']+)'", text):
        key = found.group(1)
        lines = text.splitlines()
        given = next((w.split("'")[1] for w in lines if "remove + prefix" in w and "'" in w), "")
        value = given.split("=", 1)[1] if "=" in given else "..."
        return (
            f"+{key}={value} adds a key the config already has: set it without the '+': "
            f"{key}={value}"
        )
    return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
