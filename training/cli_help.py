"""The training commands' options: declared once, as fields of a config dataclass whose metadata
holds the help (`option`), and turned into argparse options (`add_options`, `from_args`), with
help that shows a default when it tells the reader something (`DefaultsHelpFormatter`)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ` (default: X)` to an option's help when X tells the reader something: not an
    unset option, a switch that is off, or a default the help already names."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = action.default is False or action.default in (None, "", [], argparse.SUPPRESS)
        if quiet or "default" in text:
            return text
        return super()._get_help_string(action)


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # argparse's name for it
    flag: str = "",
    choices: Sequence[str] = (),
    metavar: str | None = None,
    repeat: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option: `--<name with dashes>` (or `flag`),
    required when it has no default, a switch when it is a bool, given again and again when
    `repeat` (its values collected in a list)."""
    metadata = {"help": help, "flag": flag, "choices": tuple(choices), "metavar": metavar, "repeat": repeat}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def add_options(parser: argparse.ArgumentParser, config: type[Any]) -> None:
    """One option per field of the dataclass `config` declared with `option`, in field order."""
    for f in dataclasses.fields(config):
        if "help" not in f.metadata:
            continue
        meta = f.metadata
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        if meta["choices"]:
            kwargs["choices"] = list(meta["choices"])
        else:  # what argparse shows for a flag of that name, whatever the field is called
            kwargs["metavar"] = meta["metavar"] or flag.lstrip("-").replace("-", "_").upper()
        if meta["repeat"]:
            parser.add_argument(flag, action="append", default=[], **kwargs)
            continue
        if f.type == "int":
            kwargs["type"] = int
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        parser.add_argument(flag, **kwargs)


def from_args(config: type[Any], args: argparse.Namespace, **values: Any) -> Any:
    """An instance of `config` from the parsed options, with `values` (e.g. a parsed `repeat`
    option) in place of theirs."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if hasattr(args, f.name)}
    return config(**{**given, **values})
