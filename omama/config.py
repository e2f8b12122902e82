"""Dataclass configs that double as CLI parsers: YAML file first, flags override it.

Each CLI declares one dataclass whose field metadata carries the help text, so `--help`
always lists every option with its default and the YAML file accepts the same names.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from omama.errors import OmamaError, bad_file

T = TypeVar("T")


def flag_name(field: str) -> str:
    """The command-line flag of a config field: `batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


def opt(
    default: Any,
    help: str,
    choices: tuple | None = None,
    low: float | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A config field with help text, optional choices, an optional lower bound and optional
    old flag names (`aliases=("--old-name",)`), accepted on the command line and in YAML."""
    meta = {"help": help, "choices": choices, "low": low, "aliases": aliases}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def default_workers(cap: int | None = 8) -> int:
    """Loader workers from the CPU count: leave one core to the main process (at most `cap`;
    None: every other core, as precompute's decoding wants them). Under torchrun or srun the
    node's cores are shared by its local ranks (`dist.local_ranks`): each rank gets its share."""
    from omama.dist import local_ranks

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = max(1, (cores or 2) // local_ranks() - 1)
    return n if cap is None else min(cap, n)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _base_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return _base_type(args[0]) if args else hint


def _parse_value(kind: type, raw: str) -> Any:
    if kind is bool:
        return raw.lower() in ("1", "true", "yes", "on")
    return kind(raw)


def _converter(kind: type) -> Any:
    """argparse's type callable; its __name__ is what a bad value's message calls the type."""

    def convert(raw: str) -> Any:
        return _parse_value(kind, raw)

    convert.__name__ = kind.__name__
    return convert


class _OneLineParser(argparse.ArgumentParser):
    """A bad flag is one `prog: error: ...` line and exit code 2, like every other bad input."""

    def error(self, message: str) -> typing.NoReturn:
        raise OmamaError(f"{message} (see --help)")


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file with any of the options below (names with _ or -); flags override it",
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _base_type(hints[f.name])
        flags = [flag_name(f.name), *f.metadata.get("aliases", ())]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(
                *flags,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{help_text} (default: {default})",
            )
            continue
        parser.add_argument(
            *flags,
            dest=f.name,
            type=_converter(kind),
            choices=f.metadata.get("choices"),
            default=argparse.SUPPRESS,
            help=f"{help_text} (default: {default})",
            metavar=f.name.upper() if f.metadata.get("choices") is None else None,
        )
    return parser


def parse_config(cls: type[T], argv: list[str] | None, prog: str, description: str) -> T:
    """Parse flags (and an optional --config YAML) into a validated `cls` instance."""
    parser = build_parser(cls, prog, description)
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config")
    section = prog.removeprefix("omama-")
    values: dict[str, Any] = load_yaml(config_path, cls, section) if config_path else {}
    values.update(args)
    return make_config(cls, values, source=str(config_path or "command line"))


def load_yaml(path: Path, cls: type, section: str) -> dict[str, Any]:
    """Options for one command, from a config file (see `read_section`)."""
    fields = dataclasses.fields(cls)
    aliases = {
        alias.removeprefix("--").replace("-", "_"): f.name
        for f in fields
        for alias in f.metadata.get("aliases", ())
    }
    return read_section(path, section, {f.name for f in fields}, aliases)


def read_section(
    path: Path, section: str, names: set[str], aliases: dict[str, str] | None = None
) -> dict[str, Any]:
    """Keys of `common` that this command knows, then its own section.

    A file may hold `common:`, `precompute:`, `train:`, `eval:`, `synth:` and `gt:` mappings,
    so one config describes a whole experiment; a flat mapping is read as this command's section.
    Keys may use - or _, and an option's old name (`aliases`: old name -> name) is read as it.
    """
    aliases = aliases or {}
    if not path.is_file():
        raise bad_file(path, "config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise bad_file(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise bad_file(path, "a config file must be a mapping of option: value")
    sections = {"common", "precompute", "train", "eval", "synth", "gt", "prepare", "proposals"}
    if not sections & set(data):
        data = {section: data}
    out = {}
    for key, value in (data.get("common") or {}).items():
        name = str(key).replace("-", "_")
        name = aliases.get(name, name)
        if name in names:
            out[name] = value
    for key, value in (data.get(section) or {}).items():
        name = str(key).replace("-", "_")
        name = aliases.get(name, name)
        if name not in names:
            raise bad_file(path, f"unknown {section} option '{key}'")
        out[name] = value
    return out


def _strict_value(kind: type, value: Any) -> Any:
    """A config value as the command line would take it, or ValueError.

    A string is parsed as the same flag's text would be; otherwise the YAML type must be the
    option's own (an int for an int, a number for a float, true/false for a switch): YAML's
    `1.7`, `true` or `"no"` are never coerced into an int or a switch.
    """
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(value)
    if isinstance(value, bool):  # a bool is an int to Python, never to a user
        raise ValueError(value)
    if isinstance(value, str) and kind in (int, float):
        return kind(value.strip())
    if kind is float and isinstance(value, (int, float)):
        return float(value)
    if kind is int and isinstance(value, int):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is Path and isinstance(value, (str, Path)):
        return Path(value)
    if kind in _KIND_NAMES:
        raise ValueError(value)
    return value


_KIND_NAMES = {int: "an int", float: "a number", str: "a string (quote it)", Path: "a path"}


def make_config(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Check types (as strictly as the command line), choices, bounds and finiteness, run the
    class's own `check()` when it has one, and build the dataclass."""
    hints = typing.get_type_hints(cls)
    clean: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        kind = _base_type(hints[f.name])
        if value is not None:
            try:
                value = _strict_value(kind, value)
            except ValueError:
                want = "true or false" if kind is bool else _KIND_NAMES.get(kind, kind.__name__)
                msg = f"{source}: option {f.name}={value!r} is not {want}"
                raise OmamaError(msg) from None
        clean[f.name] = value
    cfg = cls(**clean)
    for f in dataclasses.fields(cls):
        value = getattr(cfg, f.name)
        choices, low = f.metadata.get("choices"), f.metadata.get("low")
        flag = flag_name(f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise OmamaError(f"{source}: {flag} must be a finite number, got {value}")
        if choices is not None and value is not None and value not in choices:
            raise OmamaError(f"{source}: {flag} must be one of {', '.join(choices)}, got {value!r}")
        if low is not None and value is not None and value < low:
            raise OmamaError(f"{source}: {flag} must be at least {low}, got {value}")
    check = getattr(cfg, "check", None)
    if callable(check):
        try:
            check()
        except OmamaError as exc:
            raise OmamaError(f"{source}: {exc}") from None
    return cfg


def require(cfg: Any, *names: str) -> None:
    """Fail with one line when a required option was given neither as a flag nor in YAML."""
    for name in names:
        if getattr(cfg, name) is None:
            raise OmamaError(f"missing required option {flag_name(name)}")
