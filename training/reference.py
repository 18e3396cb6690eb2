"""The measuring side of evaluation: classifiers run through onnxruntime and the real images
they compare generated ones with. Torch-free.

Each dataset has two reference classifiers (`imagegen.contract.classifier`): `cnn` in
`classifiers/<dataset>/` and `resnet` in `classifiers/<dataset>/resnet/`; reported figures use
both. The selection classifier (`classifiers/<dataset>/select/`) is loaded only by
`training.selection`.

Reference images: the test split (10,000) for MNIST/Fashion-MNIST. An image folder (e.g. emoji)
has no test split: the reference is the held-out part of `split_holdout(fraction=0.2, seed=0)`
(no classifier saw it, about 1,500 images for emoji). FID, precision/recall and diversity depend
on the sample size, so sets are compared at equal size n = min(samples, reference size): the
reference (or n of it) and n real train images drawn with the evaluation seed (the floors: what
a perfect generator would score).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from imagegen.contract.classifier import (
    CLASSIFIER_MANIFEST_NAME,
    HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    REFERENCE_CLASSIFIERS,
    SELECTION_CLASSIFIER,
    ClassifierManifest,
)
from imagegen.contract.datasets import IDX_DATASETS
from imagegen.contract.manifest import ClassifierRef, sha256_file
from training import metrics
from training.data import ImageDataset, load_idx_dataset, load_image_folder, split_holdout

BATCH = 500
PR_K = 3


class EvaluationError(Exception):
    """Something evaluation needs is missing or inconsistent; the message says what and where."""


def onnx_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class FeatureExtractor:
    """A classifier loaded from its folder (`classifiers/<dataset>[/<name>]/`)."""

    def __init__(self, directory: Path, threads: int, role: str = "reference") -> None:
        if not (directory / CLASSIFIER_MANIFEST_NAME).exists():
            raise EvaluationError(
                f"no {role} classifier at {directory} (missing {CLASSIFIER_MANIFEST_NAME}); "
                "train one with "
                "`python -m training.classifier --dataset ... --out classifiers/`"
            )
        self.info = ClassifierManifest.read(directory)
        model_path = directory / self.info.onnx.file
        digest = sha256_file(model_path)
        if digest != self.info.onnx.sha256:
            raise EvaluationError(f"{model_path}: sha256 {digest} does not match its manifest")
        self.sha256 = digest
        self.session = onnx_session(model_path, threads)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def image_shape(self) -> tuple[int, int, int]:
        img = self.info.image
        return img.channels, img.height, img.width

    def ref(self) -> ClassifierRef:
        return ClassifierRef(
            dataset=self.info.dataset, sha256=self.sha256, test_accuracy=self.info.test_accuracy,
            name=self.name,
        )

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 or [0, 1] float images (N, C, H, W) -> (predicted classes, features)."""
        preds, feats = [], []
        info = self.info
        for i in range(0, len(images), BATCH):
            x = images[i : i + BATCH]
            x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
            logits, f = self.session.run([info.logits_output, info.features_output], {info.input: x})
            preds.append(logits.argmax(axis=1))
            feats.append(f)
        return np.concatenate(preds), np.concatenate(feats).astype(np.float64)


def reference_extractors(classifiers_dir: Path, dataset: str, threads: int) -> list[FeatureExtractor]:
    """Both reference classifiers of a dataset, `cnn` first."""
    extractors = [FeatureExtractor((classifiers_dir / dataset / sub).resolve(), threads)
                  for sub in REFERENCE_CLASSIFIERS.values()]
    for e in extractors:
        if e.info.role != "reference":
            raise EvaluationError(f"{e.info.dataset}/{e.name}: a {e.info.role} classifier, not a reference")
    return extractors


def selection_extractor(classifiers_dir: Path, dataset: str, threads: int) -> FeatureExtractor:
    extractor = FeatureExtractor(classifiers_dir / dataset / SELECTION_CLASSIFIER, threads, role="selection")
    if extractor.info.role != "selection":
        raise EvaluationError(f"{dataset}/{SELECTION_CLASSIFIER}: a {extractor.info.role} classifier")
    return extractor


@dataclass
class Reference:
    """The real side of the comparison in one classifier's features, computed once per run."""

    dataset: str
    description: str
    features: np.ndarray  # reference (test / held-out) features, n rows
    labels: np.ndarray  # their classes
    floor_features: np.ndarray  # real train features, n rows
    floor_labels: np.ndarray
    fid_floor: float  # real train vs reference: what a perfect generator would score
    precision_floor: float
    recall_floor: float
    # image folders: the held-out split keeps the folder's class imbalance, which class-balanced
    # samples cannot match; the class-matched figures compare with it class for class
    imbalanced: bool = False


def load_reference_sets(dataset: str, data_dir: Path) -> tuple[ImageDataset, ImageDataset, str]:
    """(real train images, reference images, description of the reference)."""
    if dataset in IDX_DATASETS:
        return (
            load_idx_dataset(dataset, data_dir, "train"),
            load_idx_dataset(dataset, data_dir, "test"),
            "test split",
        )
    folder = data_dir / dataset
    train, held = split_holdout(load_image_folder(folder), HOLDOUT_FRACTION, HOLDOUT_SEED)
    return train, held, f"held-out split of {folder.name} (fraction {HOLDOUT_FRACTION}, seed {HOLDOUT_SEED})"


@dataclass
class RealSample:
    """The real images every classifier of a run sees: n reference and n train images."""

    dataset: str
    description: str
    reference: ImageDataset
    train: ImageDataset

    @classmethod
    def draw(cls, dataset: str, data_dir: Path, samples: int, seed: int) -> RealSample:
        train, ref, description = load_reference_sets(dataset, data_dir)
        n = min(samples, len(ref), len(train))
        rng = np.random.default_rng(seed)
        ref_idx = np.arange(len(ref)) if n == len(ref) else np.sort(rng.choice(len(ref), n, replace=False))
        train_idx = np.sort(rng.choice(len(train), n, replace=False))
        return cls(dataset, f"{description}, {n} images", _subset(ref, ref_idx), _subset(train, train_idx))

    def measure(self, extractor: FeatureExtractor) -> Reference:
        if self.reference.shape != extractor.image_shape:
            raise EvaluationError(
                f"{self.dataset}: images are {self.reference.shape}, "
                f"its classifier takes {extractor.image_shape}"
            )
        _, ref_feats = extractor(self.reference.images)
        _, train_feats = extractor(self.train.images)
        precision_floor, recall_floor = metrics.precision_recall(ref_feats, train_feats, PR_K)
        return Reference(
            self.dataset, self.description, ref_feats, self.reference.labels, train_feats, self.train.labels,
            metrics.frechet_distance(train_feats, ref_feats), precision_floor, recall_floor,
            imbalanced=self.dataset not in IDX_DATASETS,
        )


def _subset(ds: ImageDataset, idx: np.ndarray) -> ImageDataset:
    return ImageDataset(ds.name, ds.images[idx], ds.labels[idx], ds.class_names)
