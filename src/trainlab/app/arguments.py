"""`key=value` arguments of the commands beside training (predict, export, serve, compress,
explain): one parser, so every command refuses a bad argument with the same one line."""

from __future__ import annotations

from collections.abc import Callable

from trainlab.errors import TrainlabError, did_you_mean


def parse_options(
    argv: list[str],
    keys: tuple[str, ...],
    required: tuple[str, ...],
    usage: str,
    *,
    defaults: dict[str, str] | None = None,
    example: Callable[[str], str] = lambda arg: f"run={arg}",
) -> dict[str, str]:
    """`key=value` arguments into a dict, over `defaults`; anything else is refused in one
    line. `example(arg)` is the `key=value` suggested for an argument without `=`."""
    defaults = defaults or {}
    options, given = dict(defaults), set()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise TrainlabError(
                f"cannot parse '{arg}': write key=value (e.g. {example(arg)}); {usage}"
            )
        if key not in keys:
            raise TrainlabError(f"unknown option '{key}'{did_you_mean(key, list(keys))}; {usage}")
        if not value:
            raise TrainlabError(
                f"{key}= is empty; give a value, e.g. {key}={defaults.get(key, '...')}; {usage}"
            )
        if key in given:
            raise TrainlabError(f"{key}= is given twice ({options[key]}, {value}); give it once")
        options[key] = value
        given.add(key)
    if missing := [key for key in required if key not in options]:
        raise TrainlabError(f"{' and '.join(missing)} not given; {usage}")
    return options
