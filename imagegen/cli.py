"""The `imagegen` command: one entry point that neither side owns.

`serve` and `sample` run the service (onnxruntime, numpy, pillow: the base install); `train`,
`export` and `evaluate` run training code, which needs the `[train]` extra (torch, onnx, scipy).
Each subcommand lives with the code it drives and takes its own argv; its module is imported
only when it runs, so a serving-only install answers `imagegen train --help` with one line
naming the extra to install, not a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

# From a clone (the usual case) the extra comes from the checkout: `pip install 'imagegen[train]'`
# would fetch an unrelated package of that name from the index.
TRAIN_EXTRA = "pip install -e '.[train]' (from the repository's checkout)"
# The training commands' help, for an install that cannot build their parsers (no torch).
HELP_DIR = Path(__file__).resolve().parent / "training_help"


@dataclass(frozen=True)
class Command:
    module: str
    function: str
    help: str
    needs: tuple[str, ...] = ()  # top-level modules the command imports, checked before it runs


COMMANDS = {
    "serve": Command("service.commands", "serve_main", "run the HTTP service on the models in models/"),
    "sample": Command("service.commands", "sample_main", "generate images offline, the bytes /sample serves"),
    "train": Command("training.train_cli", "main", "train a model family on a dataset", ("torch",)),
    "export": Command(
        "training.export", "main", "export a training run to the ONNX model repository", ("torch", "onnx")
    ),
    "evaluate": Command(
        "training.evaluate", "main", "measure a model's quality and write it to its manifest", ("scipy",)
    ),
}


def _usage() -> str:
    lines = ["usage: imagegen <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "`imagegen <command> --help` describes a command's options; `imagegen --version`."]
    return "\n".join(lines)


def version() -> str:
    """The installed distribution's version (the checkout's, for an editable install)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("imagegen")
    except PackageNotFoundError:
        return "unknown (not installed)"


def missing_modules(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"imagegen {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"imagegen: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    missing = missing_modules(cmd.needs)
    if missing and any(arg in ("-h", "--help") for arg in rest):
        # its parser needs the missing modules: the help rendered from it (scripts/training_help.py)
        print((HELP_DIR / f"{name}.txt").read_text(), end="")
        print(f"\nThis install lacks {', '.join(missing)}; to run `imagegen {name}`: {TRAIN_EXTRA}")
        return 0
    if missing:
        print(
            f"imagegen {name}: needs {', '.join(missing)}, which this install lacks: {TRAIN_EXTRA}",
            file=sys.stderr,
        )
        return 2
    func = getattr(importlib.import_module(cmd.module), cmd.function)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
