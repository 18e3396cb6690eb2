"""The model manifest: the one contract shared by training (writes it) and the service (reads it).

Layout of a model repository (docs/design.md, the Triton/KServe shape)::

    models/<model-id>/manifest.json
    models/<model-id>/<version>/model.onnx

Torch-free; `training.export` writes manifests with it and `service.repository` reads them.
`metrics` (written by `imagegen evaluate`) and `training` (written by `imagegen export`) are
typed records, so a misspelt field is an error where it is written, not a silent miss where it
is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imagegen.contract.card import ModelCard
from imagegen.contract.families import FAMILIES, Family

MANIFEST_NAME = "manifest.json"
__all__ = [
    "FAMILIES",
    "MANIFEST_NAME",
    "ClassifierRef",
    "Figures",
    "Manifest",
    "ModelCard",
    "QualityMetrics",
    "TrainingRecord",
    "default_model_id",
    "sha256_file",
]


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


class ClassifierRef(BaseModel):
    """A classifier an evaluation used."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    sha256: str
    test_accuracy: float
    name: str = "cnn"  # evaluations before the second reference classifier name none


class EvaluationInfo(BaseModel):
    """How a set of quality metrics was measured."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # the reference classifiers, by name (`cnn`, `resnet`); `classifier` alone: an evaluation
    # made when there was one
    classifiers: dict[str, ClassifierRef] | None = None
    classifier: ClassifierRef | None = None
    date: str
    duration_s: float
    model_version: int
    onnx_sha256: str
    reference: str
    samples: int
    fid_pr_samples: int
    seed: int


class Figures(BaseModel):
    """What one classifier says about a model version (`training.figures`): class accuracy
    (conditional models) or the class histogram (unconditional ones), fid_cls,
    precision/recall with the floors real train images score, within-class diversity against
    the real data's, and `*_matched` for image folders (the reference's class proportions)."""

    model_config = ConfigDict(extra="forbid")

    fid_cls: float
    fid_cls_floor: float
    precision: float
    precision_floor: float
    recall: float
    recall_floor: float
    class_accuracy: float | None = None
    class_accuracy_per_class: dict[str, float] | None = None
    worst_class: str | None = None
    worst_class_accuracy: float | None = None
    fid_cls_matched: float | None = None
    precision_matched: float | None = None
    recall_matched: float | None = None
    class_histogram: dict[str, float] | None = None
    class_entropy_bits: float | None = None
    class_entropy_max_bits: float | None = None
    diversity_ratio: float | None = None  # generated over real within-class spread, mean over classes
    diversity_ratio_floor: float | None = None  # real train images measured the same way
    least_diverse_class: str | None = None
    least_diverse_class_ratio: float | None = None


class QualityMetrics(Figures):
    """docs/design.md "Quality metrics": what `imagegen evaluate` measured on one model version.

    `by_classifier` holds each reference classifier's figures; the figures at the top are held
    to the lower (worse) of them, figure by figure, and `held_by` names the classifier each came
    from (`training.figures.hold_lower`). Metrics measured before there were two classifiers
    have neither: their top-level figures are the one classifier's."""

    model_config = ConfigDict(extra="forbid")

    evaluation: EvaluationInfo
    pr_k: int
    by_classifier: dict[str, Figures] | None = None
    held_by: dict[str, str] | None = None
    # the metrics of the version this one replaced, kept by export's quality gate
    previous: QualityMetrics | None = None
    # what the gate found worse than `previous` when `imagegen export --force` admitted it anyway
    gate_overridden: list[str] | None = None

    def classifier_figures(self) -> dict[str, Figures]:
        """Figures by classifier name; older metrics count as their one classifier's (`cnn`)."""
        if self.by_classifier is not None:
            return self.by_classifier
        name = self.evaluation.classifier.name if self.evaluation.classifier else "cnn"
        return {name: Figures.model_validate(self.model_dump(include=set(Figures.model_fields)))}


class TrainingRecord(BaseModel):
    """How a model version was trained (written by `imagegen export` from the checkpoint)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int
    steps: int
    seed: int
    batch_size: int
    train_images: int
    duration_s: float
    device: str
    threads: int
    torch: str
    commit: str
    config: dict[str, Any]  # the family's own hyper-parameters, as the checkpoint saved them
    guidance: str | None = None
    init_from: str | None = None  # the model version a warm-started run began from
    # the nets' weights and progress (training.safetensors), which `imagegen train --resume-from` continues
    weights_file: str | None = None
    weights_sha256: str | None = None


class Manifest(BaseModel):
    """One model id, describing its newest version (docs/design.md, "Model repository")."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    family: Family
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
    training: TrainingRecord | None = None
    metrics: QualityMetrics | None = None
    # license, attribution, training data, intended use, limitations (imagegen.contract.card);
    # export always writes one, manifests from before cards have none
    card: ModelCard | None = None

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
        text = json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True)
        path.write_text(text + "\n")
        return path

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        return cls.model_validate_json((model_dir / MANIFEST_NAME).read_text())


def default_model_id(family: str, dataset: str, variant: str = "default") -> str:
    """docs/design.md's id: `<family>-<dataset>`, with `-seed` for the seeds' own settings."""
    return f"{family}-{dataset}" + ("-seed" if variant == "seed" else "")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
