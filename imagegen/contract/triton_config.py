"""Triton's model configuration (`models/<id>/config.pbtxt`) from a manifest.

docs/design.md's repository is Triton's layout; this file is what lets Triton serve it without
guessing: the ONNX Runtime backend, the batch bound, the dynamic batcher, and each input and
output with its type and dims (without the batch axis). `label` is a batch-only tensor ([-1]),
which Triton cannot declare directly: it is `dims: [1]` reshaped to `[]`, Triton's idiom.

`model_config(manifest)` is the configuration as the JSON of Triton's ModelConfig message (what
`GET /v2/models/<id>/config` answers); `config_pbtxt(manifest)` the same as protobuf text.
Export calls `write_config(model_dir, manifest)`; for a whole repository:

    python -m imagegen.contract.triton_config models/           # write every config.pbtxt
    python -m imagegen.contract.triton_config models/ --check   # exit 1 when one is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from imagegen.contract.manifest import MANIFEST_NAME, Manifest

CONFIG_NAME = "config.pbtxt"
PLATFORM = "onnxruntime_onnx"
# The service's own defaults (service.settings: max_batch, max_delay_ms), so Triton batches alike.
MAX_BATCH_SIZE = 64
MAX_QUEUE_DELAY_US = 2000
_TYPES = {"z": "TYPE_FP32", "label": "TYPE_INT64", "image": "TYPE_FP32"}


def _tensor(name: str, dims: list[int]) -> dict[str, Any]:
    """One input/output; dims are the manifest's without the batch axis."""
    if not dims:  # a batch-only tensor: one value per item
        return {"name": name, "data_type": _TYPES[name], "dims": [1], "reshape": {"shape": []}}
    return {"name": name, "data_type": _TYPES[name], "dims": dims}


def model_config(
    manifest: Manifest, max_batch_size: int = MAX_BATCH_SIZE, max_queue_delay_us: int = MAX_QUEUE_DELAY_US
) -> dict[str, Any]:
    """Triton's ModelConfig for this model, as JSON (field names of Triton's model_config.proto)."""
    return {
        "name": manifest.id,
        "platform": PLATFORM,
        "max_batch_size": max_batch_size,
        "version_policy": {"latest": {"num_versions": 1}},
        # Sorted, so the file does not depend on the manifest's key order.
        "input": [_tensor(name, manifest.inputs[name][1:]) for name in sorted(manifest.inputs)],
        "output": [_tensor("image", manifest.outputs["image"][1:])],
        "dynamic_batching": {"max_queue_delay_microseconds": max_queue_delay_us},
    }


def config_pbtxt(manifest: Manifest, max_batch_size: int = MAX_BATCH_SIZE) -> str:
    """The configuration as protobuf text, the format of Triton's config.pbtxt."""
    config = model_config(manifest, max_batch_size)
    lines = [
        f"# Triton model configuration of {manifest.id}, written from its manifest.json by",
        "# imagegen.contract.triton_config: do not edit (regenerate instead).",
    ]
    for key, value in config.items():
        lines.extend(_field(key, value, ""))
    return "\n".join(lines) + "\n"


def _field(key: str, value: Any, indent: str) -> list[str]:
    if isinstance(value, dict):
        return [f"{indent}{key} {{", *_fields(value, indent + "  "), f"{indent}}}"]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        blocks = []
        for i, item in enumerate(value):
            comma = "," if i < len(value) - 1 else ""
            blocks += [f"{indent}  {{", *_fields(item, indent + "    "), f"{indent}  }}{comma}"]
        return [f"{indent}{key} [", *blocks, f"{indent}]"]
    return [f"{indent}{key}: {_scalar(key, value)}"]


def _fields(mapping: dict[str, Any], indent: str) -> list[str]:
    return [line for key, value in mapping.items() for line in _field(key, value, indent)]


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, list):
        return "[ " + ", ".join(str(v) for v in value) + " ]" if value else "[ ]"
    if key == "data_type":  # an enum: unquoted
        return str(value)
    return json.dumps(value)


def write_config(model_dir: Path, manifest: Manifest) -> Path:
    path = model_dir / CONFIG_NAME
    path.write_text(config_pbtxt(manifest))
    return path


def stale_configs(models_dir: Path) -> list[Path]:
    """Model folders whose config.pbtxt is missing or differs from what their manifest gives."""
    stale = []
    for manifest_path in sorted(models_dir.glob(f"*/{MANIFEST_NAME}")):
        model_dir = manifest_path.parent
        path = model_dir / CONFIG_NAME
        expected = config_pbtxt(Manifest.read(model_dir))
        if not path.is_file() or path.read_text() != expected:
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagegen.contract.triton_config",
        description="Write Triton's config.pbtxt for every model of a repository, from its manifest.",
    )
    parser.add_argument("models_dir", type=Path, help="the model repository (models/)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file is stale")
    args = parser.parse_args(argv)
    stale = stale_configs(args.models_dir)
    if args.check:
        for path in stale:
            print(f"stale or missing: {path}")
        return 1 if stale else 0
    for path in stale:
        write_config(path.parent, Manifest.read(path.parent))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
