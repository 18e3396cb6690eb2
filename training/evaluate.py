"""`imagegen evaluate`: measure a shipped model's quality and write it into its manifest.

It evaluates the artifact the service serves: the exported ONNX generator, run through
onnxruntime with DESIGN.md's sampling contract (latent of seed s from PCG64(s); seeds
`seed .. seed+N-1`; image i asks for class i % num_classes, so 1,000 per class at N=10,000).
Generated images are clipped and rounded to 8 bits first, as the PNGs the service returns are,
and as the real images are. The reference classifier (`classifiers/<dataset>/`, ONNX) gives:

- `class_accuracy` (conditional models): share of images of class c the classifier calls c,
  overall and per class (`class_accuracy_per_class`, `worst_class`, `worst_class_accuracy`);
  unconditional models get `class_histogram` and `class_entropy_bits` instead;
- `fid_cls`: Frechet distance between generated and reference images in the classifier's
  penultimate features; `fid_cls_floor`: the same between real train images and the reference,
  the value a perfect generator would get at this sample size;
- `precision`, `recall`: k-NN manifolds, k=3, same features (Kynkaanniemi et al. 2019).

Reference images: the test split (10,000) for MNIST/Fashion-MNIST. An image folder (e.g. emoji)
has no test split: the reference is the held-out part of `split_holdout(fraction=0.2, seed=0)`
(the classifier never saw it, about 1,500 images for emoji). FID and precision/recall depend on
the sample size, so the three sets are compared at equal size n = min(--samples, reference
size): the first n generated images (still balanced over classes) and n train images drawn
with the evaluation seed. Class accuracy uses all --samples generated images.

    imagegen evaluate gan-mnist
    imagegen evaluate --all --models-dir models --classifiers-dir classifiers --data-dir /work/shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from imagegen.contract.classifier import ClassifierManifest
from imagegen.contract.manifest import MANIFEST_NAME, Manifest, QualityMetrics, sha256_file
from imagegen.contract.sampling import build_feeds, to_uint8
from training import metrics
from training.cli_help import DefaultsHelpFormatter
from training.data import (
    DatasetError,
    ImageDataset,
    given_data_dir,
    load_idx_dataset,
    load_image_folder,
    split_holdout,
)

IDX_DATASETS = ("mnist", "fashion")
# The reference-classifier artifact (written by training.classifier, which imports these so
# that evaluation itself stays torch-free): classifiers/<dataset>/{model.onnx,manifest.json}.
CLASSIFIER_MODEL = "model.onnx"
CLASSIFIER_MANIFEST = "manifest.json"
INPUT_NAME = "image"
LOGITS_NAME = "logits"
FEATURES_NAME = "features"
# Image folders have no test split: the classifier trains on, and evaluation compares with,
# the two parts of this split.
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0
BATCH = 500
PR_K = 3


class EvaluationError(Exception):
    """Something evaluation needs is missing or inconsistent; the message says what and where."""


@dataclass(frozen=True)
class EvalConfig:
    models_dir: Path
    classifiers_dir: Path
    data_dir: Path
    samples: int = 10_000
    seed: int = 0
    threads: int = 1


@dataclass
class Reference:
    """A dataset's side of the comparison, computed once per dataset and run."""

    dataset: str
    description: str
    features: np.ndarray  # reference (test / held-out) features, n rows
    floor_features: np.ndarray  # real train features, n rows
    fid_floor: float  # real train vs reference: what a perfect generator would score
    precision_floor: float
    recall_floor: float
    # Classes of the reference rows, kept for image folders only: their held-out split has the
    # folder's class imbalance, which class-balanced samples cannot match (IDX test sets are
    # balanced already).
    labels: np.ndarray | None = None


class FeatureExtractor:
    """A reference classifier loaded from classifiers/<dataset>/ and run through onnxruntime."""

    def __init__(self, directory: Path, threads: int) -> None:
        manifest_path = directory / CLASSIFIER_MANIFEST
        if not manifest_path.exists():
            raise EvaluationError(
                f"no reference classifier at {directory} (missing {CLASSIFIER_MANIFEST}); train one with "
                "`python -m training.classifier --dataset ... --out classifiers/`"
            )
        self.info = ClassifierManifest.read(directory)
        model_path = directory / self.info.onnx.file
        digest = sha256_file(model_path)
        if digest != self.info.onnx.sha256:
            raise EvaluationError(f"{model_path}: sha256 {digest} does not match its manifest")
        self.sha256 = digest
        self.session = _session(model_path, threads)
        self.features_name = self.info.features_output
        self.logits_name = self.info.logits_output
        self.input_name = self.info.input

    @property
    def image_shape(self) -> tuple[int, int, int]:
        img = self.info.image
        return img.channels, img.height, img.width

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 or [0, 1] float images (N, C, H, W) -> (predicted classes, features)."""
        preds, feats = [], []
        for i in range(0, len(images), BATCH):
            x = images[i : i + BATCH]
            x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
            logits, f = self.session.run([self.logits_name, self.features_name], {self.input_name: x})
            preds.append(logits.argmax(axis=1))
            feats.append(f)
        return np.concatenate(preds), np.concatenate(feats).astype(np.float64)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def generate(manifest: Manifest, model_dir: Path, samples: int, seed: int, threads: int) -> tuple[
    np.ndarray, np.ndarray
]:
    """`samples` images of seeds seed..seed+samples-1, as uint8 (N, C, H, W), and their labels."""
    path = manifest.onnx_path(model_dir)
    digest = sha256_file(path)
    if digest != manifest.onnx.sha256:
        raise EvaluationError(f"{path}: sha256 {digest} does not match the manifest's {manifest.onnx.sha256}")
    session = _session(path, threads)
    labels = np.arange(samples, dtype=np.int64) % manifest.num_classes
    out_name = "image" if "image" in manifest.outputs else next(iter(manifest.outputs))
    images = []
    for start in range(0, samples, BATCH):
        stop = min(start + BATCH, samples)
        feed = build_feeds(manifest, range(seed + start, seed + stop), labels[start:stop])
        (batch,) = session.run([out_name], feed)
        images.append(to_uint8(batch))  # the service's PNGs hold these 8-bit pixels: evaluate those
    return np.concatenate(images), labels


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


def build_reference(dataset: str, extractor: FeatureExtractor, cfg: EvalConfig) -> Reference:
    train, ref, description = load_reference_sets(dataset, cfg.data_dir)
    if ref.shape != extractor.image_shape:
        raise EvaluationError(
            f"{dataset}: images are {ref.shape}, its classifier takes {extractor.image_shape}"
        )
    n = min(cfg.samples, len(ref), len(train))
    rng = np.random.default_rng(cfg.seed)
    ref_idx = np.arange(len(ref)) if n == len(ref) else np.sort(rng.choice(len(ref), n, replace=False))
    train_idx = np.sort(rng.choice(len(train), n, replace=False))
    _, ref_feats = extractor(ref.images[ref_idx])
    _, train_feats = extractor(train.images[train_idx])
    fid_floor = metrics.frechet_distance(train_feats, ref_feats)
    precision_floor, recall_floor = metrics.precision_recall(ref_feats, train_feats, PR_K)
    return Reference(
        dataset, f"{description}, {n} images", ref_feats, train_feats,
        fid_floor, precision_floor, recall_floor,
        labels=None if dataset in IDX_DATASETS else ref.labels[ref_idx],
    )


def class_matched(generated: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """Indices of generated images with the reference's class histogram: for each class c, the
    first count_c(reference) generated images asked for c. None if some class has too few."""
    picked = []
    for c, count in enumerate(np.bincount(reference)):
        of_class = np.flatnonzero(generated == c)
        if len(of_class) < count:
            return None
        picked.append(of_class[:count])
    return np.sort(np.concatenate(picked))


def evaluate_model(
    manifest: Manifest, model_dir: Path, extractor: FeatureExtractor, reference: Reference, cfg: EvalConfig
) -> dict:
    """The `metrics` dict of one model."""
    t0 = time.time()
    images, labels = generate(manifest, model_dir, cfg.samples, cfg.seed, cfg.threads)
    if images.shape[1:] != extractor.image_shape:
        raise EvaluationError(f"{manifest.id}: images are {images.shape[1:]}, classifier takes "
                              f"{extractor.image_shape}")
    predicted, feats = extractor(images)
    n = len(reference.features)
    fake = feats[:n]  # labels cycle, so the first n stay balanced over classes
    precision, recall = metrics.precision_recall(reference.features, fake, PR_K)
    names = extractor.info.class_names
    result: dict = {
        "fid_cls": round(metrics.frechet_distance(fake, reference.features), 4),
        "fid_cls_floor": round(reference.fid_floor, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        # Real train images measured the same way: the precision/recall a perfect generator gets.
        "precision_floor": round(reference.precision_floor, 4),
        "recall_floor": round(reference.recall_floor, 4),
        "pr_k": PR_K,
    }
    if manifest.conditional:
        result |= class_matched_metrics(labels, feats, reference)
        overall, per_class = metrics.class_accuracy(predicted, labels, manifest.num_classes)
        worst = int(np.nanargmin(per_class))
        result |= {
            "class_accuracy": round(overall, 4),
            "class_accuracy_per_class": {names[c]: round(a, 4) for c, a in enumerate(per_class)},
            "worst_class": names[worst],
            "worst_class_accuracy": round(per_class[worst], 4),
        }
    else:
        hist, entropy = metrics.class_histogram(predicted, len(names))
        result |= {
            "class_histogram": {names[c]: round(p, 4) for c, p in enumerate(hist)},
            "class_entropy_bits": round(entropy, 4),
            "class_entropy_max_bits": round(float(np.log2(len(names))), 4),
        }
    result["evaluation"] = {
        "seed": cfg.seed,
        "samples": cfg.samples,
        "fid_pr_samples": n,
        "reference": reference.description,
        "classifier": {
            "dataset": reference.dataset,
            "sha256": extractor.sha256,
            "test_accuracy": extractor.info.test_accuracy,
        },
        "model_version": manifest.version,
        "onnx_sha256": manifest.onnx.sha256,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.time() - t0, 1),
    }
    return result


def class_matched_metrics(labels: np.ndarray, feats: np.ndarray, reference: Reference) -> dict:
    """fid_cls and precision/recall against samples drawn in the reference's class proportions,
    so that an imbalanced held-out split (emoji: 60% people-body) does not count against a
    model for drawing the classes it is asked for."""
    idx = None if reference.labels is None else class_matched(labels, reference.labels)
    if idx is None:
        return {}
    precision, recall = metrics.precision_recall(reference.features, feats[idx], PR_K)
    return {
        "fid_cls_matched": round(metrics.frechet_distance(feats[idx], reference.features), 4),
        "precision_matched": round(precision, 4),
        "recall_matched": round(recall, 4),
    }


def write_metrics(model_dir: Path, evaluated: Manifest, result: dict) -> None:
    """Replace `metrics` only; everything else in the manifest must read back unchanged.
    The manifest is read again first: if a new version was exported while this one was being
    measured, the numbers belong to the old one and are not written."""
    current = Manifest.read(model_dir)
    if (current.version, current.onnx.sha256) != (evaluated.version, evaluated.onnx.sha256):
        raise EvaluationError(
            f"{model_dir}: version {current.version} was exported during the evaluation of version "
            f"{evaluated.version}; evaluate it again"
        )
    before = json.loads((model_dir / MANIFEST_NAME).read_text())
    measured = QualityMetrics.model_validate(result)
    # the figures of the version this one replaced, which export's quality gate compared against
    measured.previous = current.metrics.previous if current.metrics is not None else None
    current.metrics = measured
    current.write(model_dir)
    after = json.loads((model_dir / MANIFEST_NAME).read_text())
    before.pop("metrics", None)
    after.pop("metrics", None)
    if before != after:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        raise EvaluationError(f"{model_dir}: writing metrics changed other fields {changed}")


def model_dirs(models_dir: Path, model_id: str | None, all_models: bool) -> list[Path]:
    if all_models:
        dirs = sorted(p.parent for p in models_dir.glob(f"*/{MANIFEST_NAME}"))
        if not dirs:
            raise EvaluationError(f"no models (*/{MANIFEST_NAME}) under {models_dir}")
        return dirs
    if model_id is None:
        raise EvaluationError("name a MODEL_ID or pass --all")
    directory = models_dir / model_id
    if not (directory / MANIFEST_NAME).exists():
        known = sorted(p.parent.name for p in models_dir.glob(f"*/{MANIFEST_NAME}"))
        raise EvaluationError(f"unknown model {model_id!r} in {models_dir}; known: {known}")
    return [directory]


def run(model_id: str | None, all_models: bool, cfg: EvalConfig) -> dict[str, dict]:
    """Evaluate models and write their metrics; returns them by model id."""
    extractors: dict[str, FeatureExtractor] = {}
    references: dict[str, Reference] = {}
    results = {}
    for model_dir in model_dirs(cfg.models_dir, model_id, all_models):
        manifest = Manifest.read(model_dir)
        dataset = manifest.dataset
        if dataset not in extractors:
            extractors[dataset] = FeatureExtractor(cfg.classifiers_dir / dataset, cfg.threads)
            references[dataset] = build_reference(dataset, extractors[dataset], cfg)
        result = evaluate_model(manifest, model_dir, extractors[dataset], references[dataset], cfg)
        write_metrics(model_dir, manifest, result)
        results[manifest.id] = result
        print(_summary(manifest.id, result), flush=True)
    return results


def measure(manifest: Manifest, model_dir: Path, cfg: EvalConfig) -> QualityMetrics:
    """The metrics of one model (its files under `model_dir`), written nowhere: what export's
    quality gate compares before it replaces a version."""
    extractor = FeatureExtractor(cfg.classifiers_dir / manifest.dataset, cfg.threads)
    reference = build_reference(manifest.dataset, extractor, cfg)
    return QualityMetrics.model_validate(evaluate_model(manifest, model_dir, extractor, reference, cfg))


def regressions(new: QualityMetrics, old: QualityMetrics) -> list[str]:
    """What got worse from `old` to `new`: class accuracy (conditional models) and fid_cls."""
    worse = []
    if new.class_accuracy is not None and old.class_accuracy is not None:
        if new.class_accuracy < old.class_accuracy:
            worse.append(f"class accuracy {100 * new.class_accuracy:.1f}% < {100 * old.class_accuracy:.1f}%")
    if new.fid_cls > old.fid_cls:
        worse.append(f"fid_cls {new.fid_cls:.2f} > {old.fid_cls:.2f}")
    return worse


def comparison_table(rows: list[tuple[str, QualityMetrics | None]]) -> str:
    """Versions side by side: one column per (name, metrics)."""
    def fmt(m: QualityMetrics | None, key: str) -> str:
        value = None if m is None else getattr(m, key)
        if value is None:
            return "-"
        return f"{100 * value:.1f}%" if "accuracy" in key else f"{value:.3f}"

    keys = ["class_accuracy", "worst_class_accuracy", "fid_cls", "fid_cls_matched", "precision", "recall"]
    width = max(12, *(len(name) for name, _ in rows))
    lines = [f"{'':<22}" + "".join(f"{name:>{width + 2}}" for name, _ in rows)]
    for key in keys:
        if all(m is None or getattr(m, key) is None for _, m in rows):
            continue
        lines.append(f"{key:<22}" + "".join(f"{fmt(m, key):>{width + 2}}" for _, m in rows))
    worst = [f"{name}: {m.worst_class}" for name, m in rows if m is not None and m.worst_class]
    if worst:
        lines.append("worst class: " + ", ".join(worst))
    return "\n".join(lines)


def compare(model_dir: Path, cfg: EvalConfig) -> str:
    """`imagegen evaluate --compare models/<id>`: the current version measured now beside the
    figures recorded for it and for the version it replaced."""
    manifest = Manifest.read(model_dir)
    now = measure(manifest, model_dir, cfg)
    recorded = manifest.metrics
    previous = recorded.previous if recorded is not None else None
    rows = [
        (f"v{previous.evaluation.model_version} (previous)" if previous else "previous", previous),
        (f"v{manifest.version} (recorded)", recorded),
        (f"v{manifest.version} (now)", now),
    ]
    return f"{manifest.id}\n" + comparison_table(rows)


def _summary(model_id: str, r: dict) -> str:
    if "class_accuracy" in r:
        worst = f"worst {r['worst_class']} {r['worst_class_accuracy']:.4f}"
        cls = f"class_acc {r['class_accuracy']:.4f} ({worst})"
    else:
        cls = f"class entropy {r['class_entropy_bits']:.3f}/{r['class_entropy_max_bits']:.3f} bits"
    return (
        f"{model_id}: {cls}, fid_cls {r['fid_cls']:.3f} (floor {r['fid_cls_floor']:.3f}), "
        f"precision {r['precision']:.4f} (floor {r['precision_floor']:.4f}), "
        f"recall {r['recall']:.4f} (floor {r['recall_floor']:.4f}) [{r['evaluation']['duration_s']}s]"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagegen evaluate",
        description="Measure a model's quality (class accuracy, fid_cls, precision/recall) and write it "
        "into its manifest's `metrics`.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("model_id", nargs="?", help="a model id under --models-dir (or use --all)")
    p.add_argument("--compare", type=Path, default=None, metavar="MODEL_DIR",
                   help="print models/<id>'s current version measured now beside its recorded figures "
                   "and those of the version it replaced; writes nothing")
    p.add_argument("--all", action="store_true", help="evaluate every model under --models-dir")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="the model repository")
    p.add_argument("--classifiers-dir", type=Path, default=Path("classifiers"),
                   help="the reference classifiers the metrics are measured with")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="real data root (mnist/, fashion-mnist/, <image folder>/); "
                   "default $IMAGEGEN_DATA_DIR")
    p.add_argument("--samples", type=int, default=10_000, help="generated images")
    p.add_argument("--seed", type=int, default=0, help="first seed of the generated images")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir = given_data_dir(args.data_dir)
    if data_dir is None:
        print("imagegen evaluate: error: give --data-dir or set IMAGEGEN_DATA_DIR", file=sys.stderr)
        return 2
    if args.samples < 2 * (PR_K + 1):
        print(f"imagegen evaluate: error: --samples must be at least {2 * (PR_K + 1)}", file=sys.stderr)
        return 2
    cfg = EvalConfig(args.models_dir, args.classifiers_dir, data_dir, args.samples, args.seed, args.threads)
    try:
        if args.compare is not None:
            print(compare(args.compare, cfg))
            return 0
        run(args.model_id, args.all, cfg)
    except (EvaluationError, DatasetError) as exc:
        print(f"imagegen evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
