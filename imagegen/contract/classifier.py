"""The reference classifier's manifest: `classifiers/<dataset>/manifest.json`.

Written by `training.classifier`, read by `training.evaluate` and `training.report`. A
classifier is a measuring instrument, not a served model, so it has its own small manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagegen.contract.manifest import ImageSpec, OnnxSpec

CLASSIFIER_MANIFEST_NAME = "manifest.json"


class Holdout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(gt=0, lt=1)
    seed: int


class ClassifierManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: str  # the key evaluation looks it up by: mnist, fashion, or an image folder's name
    loader: str  # mnist | fashion | imagefolder
    image: ImageSpec
    num_classes: int = Field(ge=1)
    class_names: list[str]
    test_accuracy: float
    test_split: str
    holdout: Holdout | None = None  # image folders: the held-out split evaluation compares against
    train_images: int
    test_images: int
    onnx: OnnxSpec
    input: str = "image"
    input_range: str = "[0, 1] float32, NCHW"
    logits_output: str = "logits"
    features_output: str = "features"
    feature_dim: int
    model_config_: dict[str, Any] = Field(alias="model_config")
    training: dict[str, Any]

    def write(self, directory: Path) -> Path:
        path = directory / CLASSIFIER_MANIFEST_NAME
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> ClassifierManifest:
        return cls.model_validate_json((directory / CLASSIFIER_MANIFEST_NAME).read_text())
