"""Shared parsing of command-line values, and the command line that rebuilds a command's config dataclass.

A leaf module: it imports nothing from the package, so the commands (`training`, `results`) and the CLI on top of
them can all use it without importing one another.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys


def parse_weights(text: str, objectives: list[str]) -> dict[str, float]:
    """'helpful=0.7,humor=0.3' -> {'helpful': 0.7, 'humor': 0.3}; empty -> equal weights.

    >>> parse_weights("helpful=0.7,humor=0.3", ["helpful", "humor"])
    {'helpful': 0.7, 'humor': 0.3}
    """
    if not text.strip():
        return {name: 1.0 for name in objectives}
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"weights must look like helpful=0.7,humor=0.3; got {part!r}") from None
        if not sep:
            raise ValueError(f"weights must look like helpful=0.7,humor=0.3; got {part!r}")
    return out


def parse_numbers(text: str, kind, name: str) -> tuple:
    """'1,2,4' -> (1.0, 2.0, 4.0) for a comma-separated option ``name``; a clear ValueError otherwise.

    >>> parse_numbers("1,2,4", float, "--betas")
    (1.0, 2.0, 4.0)
    """
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{name} needs at least one value")
    return values


def invoked_command(subcommand: str) -> str:
    """The command line that is running, for a generated page to name; the bare subcommand when called from code."""
    args = sys.argv[1:] if sys.argv[1:2] == [subcommand] else [subcommand]
    return "python -m mavis_core " + shlex.join(args)


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def config_argv(cfg) -> list[str]:
    """The options that give a command's config dataclass ``cfg`` back from its defaults.

    Each field that differs from its default becomes ``--field-name value`` (the option's name may be set by the
    field's ``metadata["option"]``): a flag for a bool, comma-separated values for a tuple, the option once per
    value for a field whose ``metadata["repeat"]`` is set. The CLI parses these options into the same fields.
    """
    argv = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if value == _default(field):
            continue
        option = field.metadata.get("option", "--" + field.name.replace("_", "-"))
        if isinstance(value, bool):
            argv.append(option)  # a flag that turns the default around
        elif field.metadata.get("repeat"):
            argv += [a for v in value for a in (option, str(v))]
        elif isinstance(value, tuple):
            argv += [option, ",".join(map(str, value))]
        else:
            argv += [option, str(value)]
    return argv


def command_line(subcommand: str, cfg) -> str:
    """``python -m mavis_core SUBCOMMAND`` with the options of ``cfg`` (`config_argv`): what a manifest records."""
    return "python -m mavis_core " + shlex.join([subcommand, *config_argv(cfg)])
