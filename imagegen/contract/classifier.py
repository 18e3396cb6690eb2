"""A classifier's manifest: `classifiers/<dataset>/[<name>/]manifest.json`.

Written by `training.classifier`, read by `training.evaluate`, `training.selection` and
`training.report`. A classifier is a measuring instrument, not a served model, so it has its
own small manifest. Per dataset there are two reference classifiers (role `reference`: `cnn`
in `classifiers/<dataset>/`, `resnet` in `classifiers/<dataset>/resnet/`), whose figures are
reported, and one selection classifier (role `selection`, `classifiers/<dataset>/select/`),
the only one checkpoint selection may use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagegen.contract.manifest import ImageSpec, OnnxSpec

CLASSIFIER_MANIFEST_NAME = "manifest.json"
CLASSIFIER_MODEL_NAME = "model.onnx"
# the ONNX graph's names: images in, (logits, penultimate features) out
INPUT_NAME, LOGITS_NAME, FEATURES_NAME = "image", "logits", "features"
# Image folders have no test split: classifiers train on, and evaluation compares with, the two
# parts of `split_holdout(fraction, seed)`.
HOLDOUT_FRACTION, HOLDOUT_SEED = 0.2, 0
# Where each classifier of a dataset lives, below classifiers/<dataset>/, by name.
REFERENCE_CLASSIFIERS = {"cnn": ".", "resnet": "resnet"}
SELECTION_CLASSIFIER = "select"
# Reported figures use seeds 0..9,999 (image i asks for class i mod K); every seed below
# SELECTION_SEED is kept for reports, and checkpoint selection draws from SELECTION_SEED up, so
# a checkpoint is never picked on the seeds that then report it.
REPORTED_SEEDS = range(0, 10_000)
SELECTION_SEED = 1_000_000


class Holdout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(gt=0, lt=1)
    seed: int


class ClassifierManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: str  # the key evaluation looks it up by: mnist, fashion, or an image folder's name
    name: str = "cnn"  # its name in the metrics (`classifiers` keys); the first one predates the field
    role: Literal["reference", "selection"] = "reference"
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
