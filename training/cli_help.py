"""Help for the training commands' options: argparse's defaults formatter, quiet where the
default says nothing (an unset option, a switch that is off) or the help already names it."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ` (default: X)` to an option's help when X tells the reader something."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = action.default is False or action.default in (None, "", [], argparse.SUPPRESS)
        if quiet or "default" in text:
            return text
        return super()._get_help_string(action)
