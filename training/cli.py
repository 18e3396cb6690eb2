"""The `imagegen` command: one entry point, one module per subcommand.

Each subcommand lives with the code it drives and takes its own argv, so `imagegen serve`
and `imagegen sample` need only the serving dependencies (no torch), while `train`,
`export` and `evaluate` import torch/onnx only when they run.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "serve": ("service.commands", "serve_main", "run the HTTP service on the models in models/"),
    "sample": ("service.commands", "sample_main", "generate images offline through the service runtime"),
    "train": ("training.trainer", "main", "train a model family on a dataset"),
    "export": ("training.export", "main", "export a training run to the ONNX model repository"),
    "evaluate": ("training.evaluate", "main", "measure a model's quality and write it to its manifest"),
}


def _usage() -> str:
    lines = ["usage: imagegen <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`imagegen <command> --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"imagegen: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
