"""The model manifest: the one contract shared by training (writes it) and the service (reads it).

Layout of a model repository (DESIGN.md, the Triton/KServe shape)::

    models/<model-id>/manifest.json
    models/<model-id>/<version>/model.onnx

This module is torch-free; `training.export` imports it to write and validate manifests and
`service.repository` imports it to read them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MANIFEST_NAME = "manifest.json"
FAMILIES = ("label", "evaluator", "gan", "vae")


class ImageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: int = Field(ge=1, le=4)
    height: int = Field(ge=1)
    width: int = Field(ge=1)


class OnnxSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int = Field(ge=7)


class Manifest(BaseModel):
    """One model id, describing its newest version (DESIGN.md, "Model repository")."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    family: str
    dataset: str
    version: int = Field(ge=1)
    image: ImageSpec
    latent_dim: int = Field(ge=0)
    num_classes: int = Field(ge=1)
    class_names: list[str]
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]
    onnx: OnnxSpec
    # Extra ONNX files of the same version (e.g. the VAE encoder), by role.
    extra_onnx: dict[str, OnnxSpec] = Field(default_factory=dict)
    # True for the seeds' own settings, shipped as baselines (ids end in "-seed").
    baseline: bool = False
    variant: str = "default"
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names, num_classes is {self.num_classes}"
            )
        allowed_inputs = {"z", "label"}
        unknown = set(self.inputs) - allowed_inputs
        if unknown:
            raise ValueError(f"unknown inputs {sorted(unknown)}; allowed: {sorted(allowed_inputs)}")
        if not self.inputs:
            raise ValueError("a model must take at least one input (z and/or label)")
        if "z" in self.inputs and self.inputs["z"] != [-1, self.latent_dim]:
            raise ValueError(f"inputs.z must be [-1, {self.latent_dim}], got {self.inputs['z']}")
        if "z" not in self.inputs and self.latent_dim != 0:
            raise ValueError("latent_dim must be 0 when the model takes no z")
        if "label" in self.inputs and self.inputs["label"] != [-1]:
            raise ValueError(f"inputs.label must be [-1], got {self.inputs['label']}")
        expected = [-1, self.image.channels, self.image.height, self.image.width]
        if self.outputs.get("image") != expected:
            raise ValueError(f"outputs.image must be {expected}, got {self.outputs.get('image')}")
        return self

    @property
    def conditional(self) -> bool:
        return "label" in self.inputs

    def onnx_path(self, model_dir: Path) -> Path:
        return model_dir / self.onnx.file

    def write(self, model_dir: Path) -> Path:
        path = model_dir / MANIFEST_NAME
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)
        path.write_text(text + "\n")
        return path

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        return cls.model_validate_json((model_dir / MANIFEST_NAME).read_text())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
