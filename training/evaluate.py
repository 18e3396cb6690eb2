"""`imagegen evaluate`: measure a shipped model's quality and write it into its manifest.

It evaluates the artifact the service serves: the exported ONNX generator, run through
onnxruntime with docs/design.md's sampling contract (latent of seed s from PCG64(s); seeds
`seed .. seed+N-1`; image i asks for class i % num_classes, so 1,000 per class at N=10,000).
Generated images are clipped and rounded to 8 bits first, as the PNGs the service returns are,
and as the real images are.

Both reference classifiers of the dataset (`cnn` and `resnet`, `training.reference`) measure
the same images; each one's figures (`training.figures`: class accuracy and worst class,
fid_cls, precision/recall, within-class diversity, with the floors real images score) go into
the manifest's `metrics.by_classifier`, and the top-level figures are held to the lower (worse)
of the two. Reported figures use seeds 0..9,999; checkpoint selection (`training.selection`) uses
neither of these classifiers and seeds from 1,000,000, so a model is never reported by what
picked it.

FID and precision/recall compare equal-size sets: the first n generated images (still balanced
over classes), n reference and n train images, n = min(--samples, reference size). Class
accuracy uses all --samples generated images.

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
from typing import Any

import numpy as np

from imagegen.contract.manifest import MANIFEST_NAME, Manifest, QualityMetrics, sha256_file
from imagegen.contract.sampling import build_feeds, to_uint8
from training.cli_help import DefaultsHelpFormatter
from training.data import DatasetError, given_data_dir
from training.figures import figures, hold_lower
from training.reference import (
    BATCH,
    PR_K,
    EvaluationError,
    FeatureExtractor,
    RealSample,
    Reference,
    onnx_session,
    reference_extractors,
)

__all__ = ["EvalConfig", "EvaluationError", "Judges", "measure", "run"]


@dataclass(frozen=True)
class EvalConfig:
    models_dir: Path
    classifiers_dir: Path
    data_dir: Path
    samples: int = 10_000
    seed: int = 0
    threads: int = 1


@dataclass
class Judges:
    """The classifiers of one dataset with the real images in each one's features."""

    extractors: list[FeatureExtractor]
    references: list[Reference]

    @classmethod
    def build(cls, extractors: list[FeatureExtractor], dataset: str, cfg: EvalConfig) -> Judges:
        real = RealSample.draw(dataset, cfg.data_dir, cfg.samples, cfg.seed)
        return cls(extractors, [real.measure(e) for e in extractors])

    @classmethod
    def reference(cls, dataset: str, cfg: EvalConfig) -> Judges:
        return cls.build(reference_extractors(cfg.classifiers_dir, dataset, cfg.threads), dataset, cfg)


def generate(manifest: Manifest, model_dir: Path, samples: int, seed: int, threads: int) -> tuple[
    np.ndarray, np.ndarray
]:
    """`samples` images of seeds seed..seed+samples-1, as uint8 (N, C, H, W), and their labels."""
    path = manifest.onnx_path(model_dir)
    digest = sha256_file(path)
    if digest != manifest.onnx.sha256:
        raise EvaluationError(f"{path}: sha256 {digest} does not match the manifest's {manifest.onnx.sha256}")
    session = onnx_session(path, threads)
    labels = np.arange(samples, dtype=np.int64) % manifest.num_classes
    out_name = "image" if "image" in manifest.outputs else next(iter(manifest.outputs))
    images = []
    for start in range(0, samples, BATCH):
        stop = min(start + BATCH, samples)
        feed = build_feeds(manifest, range(seed + start, seed + stop), labels[start:stop])
        (batch,) = session.run([out_name], feed)
        images.append(to_uint8(batch))  # the service's PNGs hold these 8-bit pixels: evaluate those
    return np.concatenate(images), labels


def judge(
    manifest: Manifest, images: np.ndarray, labels: np.ndarray, judges: Judges
) -> dict[str, dict[str, Any]]:
    """Each classifier's figures of the generated images, by classifier name."""
    by_classifier = {}
    for extractor, reference in zip(judges.extractors, judges.references, strict=True):
        if images.shape[1:] != extractor.image_shape:
            raise EvaluationError(
                f"{manifest.id}: images are {images.shape[1:]}, classifier takes {extractor.image_shape}"
            )
        predicted, feats = extractor(images)
        by_classifier[extractor.name] = figures(
            predicted, feats, labels, manifest.conditional, extractor.info.class_names, reference
        )
    return by_classifier


def evaluate_model(manifest: Manifest, model_dir: Path, judges: Judges, cfg: EvalConfig) -> dict:
    """The `metrics` dict of one model: both classifiers' figures and the lower of them."""
    t0 = time.time()
    images, labels = generate(manifest, model_dir, cfg.samples, cfg.seed, cfg.threads)
    by_classifier = judge(manifest, images, labels, judges)
    held, held_by = hold_lower(by_classifier)
    return held | {
        "pr_k": PR_K,
        "by_classifier": by_classifier,
        "held_by": held_by,
        "evaluation": {
            "seed": cfg.seed,
            "samples": cfg.samples,
            "fid_pr_samples": len(judges.references[0].features),
            "reference": judges.references[0].description,
            "classifiers": {e.name: e.ref().model_dump() for e in judges.extractors},
            "model_version": manifest.version,
            "onnx_sha256": manifest.onnx.sha256,
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "duration_s": round(time.time() - t0, 1),
        },
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
    # and what it overrode if it was forced past that gate
    if current.metrics is not None:
        measured.previous = current.metrics.previous
        measured.gate_overridden = current.metrics.gate_overridden
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
    judges: dict[str, Judges] = {}
    results = {}
    for model_dir in model_dirs(cfg.models_dir, model_id, all_models):
        manifest = Manifest.read(model_dir)
        if manifest.dataset not in judges:
            judges[manifest.dataset] = Judges.reference(manifest.dataset, cfg)
        result = evaluate_model(manifest, model_dir, judges[manifest.dataset], cfg)
        write_metrics(model_dir, manifest, result)
        results[manifest.id] = result
        print(summary(manifest.id, QualityMetrics.model_validate(result)), flush=True)
    return results


def measure(manifest: Manifest, model_dir: Path, cfg: EvalConfig) -> QualityMetrics:
    """The metrics of one model (its files under `model_dir`), written nowhere: what export's
    quality gate compares before it replaces a version."""
    judges = Judges.reference(manifest.dataset, cfg)
    return QualityMetrics.model_validate(evaluate_model(manifest, model_dir, judges, cfg))


def summary(model_id: str, m: QualityMetrics) -> str:
    """One line per classifier, then the held figures."""
    lines = [f"{model_id} [{m.evaluation.duration_s}s]"]
    for name, f in m.classifier_figures().items():
        if f.class_accuracy is not None:
            cls = f"class_acc {f.class_accuracy:.4f} (worst {f.worst_class} {f.worst_class_accuracy:.4f})"
        else:
            cls = f"class entropy {f.class_entropy_bits:.3f}/{f.class_entropy_max_bits:.3f} bits"
        diversity = "" if f.diversity_ratio is None else (
            f", diversity {f.diversity_ratio:.3f} "
            f"(least {f.least_diverse_class} {f.least_diverse_class_ratio:.3f})"
        )
        lines.append(
            f"  {name:>7}: {cls}, fid_cls {f.fid_cls:.3f} (floor {f.fid_cls_floor:.3f}), "
            f"precision {f.precision:.4f} (floor {f.precision_floor:.4f}), "
            f"recall {f.recall:.4f} (floor {f.recall_floor:.4f}){diversity}"
        )
    if m.class_accuracy is not None:
        lines.append(f"     held: class_acc {m.class_accuracy:.4f}, worst {m.worst_class} "
                     f"{m.worst_class_accuracy:.4f}, recall {m.recall:.4f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagegen evaluate",
        description="Measure a model's quality with both reference classifiers (class accuracy, fid_cls, "
        "precision/recall, within-class diversity) and write it into its manifest's `metrics`.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("model_id", nargs="?", help="a model id under --models-dir (or use --all)")
    p.add_argument("--compare", type=Path, default=None, metavar="MODEL_DIR",
                   help="print models/<id>'s current version measured now beside its recorded figures "
                   "and those of the version it replaced; writes nothing")
    p.add_argument("--all", action="store_true", help="evaluate every model under --models-dir")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="the model repository")
    add_measure_options(p, "the reference classifiers the metrics are measured with", samples=10_000, seed=0)
    return p


def add_measure_options(p: argparse.ArgumentParser, classifiers_help: str, samples: int, seed: int) -> None:
    """What evaluation and selection both take: classifiers, real data, samples, first seed, threads."""
    p.add_argument("--classifiers-dir", type=Path, default=Path("classifiers"), help=classifiers_help)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="real data root (mnist/, fashion-mnist/, <image folder>/); "
                   "default $IMAGEGEN_DATA_DIR")
    p.add_argument("--samples", type=int, default=samples, help="generated images")
    p.add_argument("--seed", type=int, default=seed, help="first seed of the generated images")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")


def measure_config(args: argparse.Namespace, prog: str, models_dir: Path) -> EvalConfig | None:
    """The EvalConfig of parsed measure options, or None after printing what is wrong."""
    data_dir = given_data_dir(args.data_dir)
    if data_dir is None:
        print(f"{prog}: error: give --data-dir or set IMAGEGEN_DATA_DIR", file=sys.stderr)
        return None
    if args.samples < 2 * (PR_K + 1):
        print(f"{prog}: error: --samples must be at least {2 * (PR_K + 1)}", file=sys.stderr)
        return None
    return EvalConfig(models_dir, args.classifiers_dir, data_dir, args.samples, args.seed, args.threads)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = measure_config(args, "imagegen evaluate", args.models_dir)
    if cfg is None:
        return 2
    try:
        if args.compare is not None:
            from training.gate import compare

            print(compare(args.compare, cfg))
            return 0
        run(args.model_id, args.all, cfg)
    except (EvaluationError, DatasetError) as exc:
        print(f"imagegen evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
