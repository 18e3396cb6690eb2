"""Render the training commands' `--help` into imagegen/training_help/<command>.txt.

    python scripts/training_help.py            # rewrite the files
    python scripts/training_help.py --check    # exit 1 when a committed file is stale

A serving-only install has no torch, so it cannot build `imagegen train|export|evaluate`'s
parsers; it prints these files instead (imagegen/cli.py), with the line that installs the extra.
tests/test_docs.py fails until they match the parsers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file from a checkout: `training` is the checkout's
    sys.path.insert(0, str(ROOT))

from imagegen.cli import COMMANDS, HELP_DIR  # noqa: E402

WIDTH = "100"  # argparse wraps to the terminal: the same width wherever this runs


def rendered() -> dict[str, str]:
    """{command: its parser's help} for each command that needs the training extra."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return {
            name: importlib.import_module(command.module).build_parser().format_help()
            for name, command in COMMANDS.items()
            if command.needs
        }
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = ap.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = HELP_DIR / f"{name}.txt"
        if not path.exists() or path.read_text() != text:
            stale.append(name)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print(f"stale: {stale}; run python scripts/training_help.py", file=sys.stderr)
        return 1
    print(f"{'stale' if args.check else 'wrote'}: {stale or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
