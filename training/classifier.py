"""Train a classifier of generated images: the feature extractors of the quality metrics.

No pretrained Inception weights can be had here, so each dataset gets small nets of its own,
trained on the train split only (image folders: on `split_holdout`'s train part), exported to
ONNX with two outputs, `logits` and `features` (the penultimate layer), and kept in the
repository beside a manifest (`imagegen.contract.classifier`). Per dataset:

    classifiers/<dataset>/          reference A, `cnn` (architecture cnn, width 16, seed 0)
    classifiers/<dataset>/resnet/   reference B, `resnet` (architecture resnet, width 24, seed 1,
                                    random shifts): another architecture, seed and training run
    classifiers/<dataset>/select/   the selection classifier (cnn, width 8, seed 2, random shifts):
                                    the only one `training.selection` ranks checkpoints with

Reported figures (`imagegen evaluate`, export's gate) use both references and hold to the
lower; selection uses neither (see `training.selection`). They live outside `models/` on purpose:
the service loads everything under `models/`. Evaluation runs them through onnxruntime.

    python -m training.classifier --dataset mnist --epochs 5 --out classifiers/
    python -m training.classifier --dataset mnist --arch resnet --width 24 --seed 1 --shift 2 \
        --epochs 4 --name resnet --out classifiers/
    python -m training.classifier --dataset mnist --width 8 --seed 2 --shift 2 --epochs 3 \
        --name select --role selection --out classifiers/
    python -m training.classifier --dataset imagefolder --data-dir $IMAGEGEN_DATA_DIR/emoji ...
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imagegen.contract.classifier import (
    CLASSIFIER_MODEL_NAME,
    FEATURES_NAME,
    HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    INPUT_NAME,
    LOGITS_NAME,
    REFERENCE_CLASSIFIERS,
    ClassifierManifest,
)
from imagegen.contract.manifest import sha256_file
from training.classifier_nets import ARCHITECTURES, ClassifierConfig, build_classifier
from training.data import DatasetError, ImageDataset, load_dataset, split_holdout


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    threads: int = 1  # the CPU is shared; one thread keeps training polite
    shift: int = 0  # augmentation: random translation by up to this many pixels (0 = none)


def load_splits(dataset: str, data_dir: Path | None) -> tuple[ImageDataset, ImageDataset, str]:
    """(train, test, name of the test split). Image folders have no test split: a stratified
    held-out part (fraction 0.2, seed 0) stands in for it, the same one evaluation uses."""
    if dataset == "imagefolder":
        full = load_dataset("imagefolder", data_dir)
        train, held = split_holdout(full, HOLDOUT_FRACTION, HOLDOUT_SEED)
        return train, held, f"held-out (split_holdout fraction={HOLDOUT_FRACTION}, seed={HOLDOUT_SEED})"
    return load_dataset(dataset, data_dir, "train"), load_dataset(dataset, data_dir, "test"), "test"


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class predictions for uint8 or [0, 1] float images."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(_as_float(images[i : i + batch_size]))
            out.append(model(x)[0].argmax(1).numpy())
    return np.concatenate(out)


def _as_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def train(model: nn.Module, train_set: ImageDataset, test_set: ImageDataset, cfg: TrainConfig) -> float:
    """AdamW, one-cycle schedule, optional random shifts; returns the final epoch's test accuracy
    (printed every epoch, never used to pick an epoch)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    images, labels = torch.from_numpy(train_set.as_float()), torch.from_numpy(train_set.labels)
    steps_per_epoch = (len(labels) + cfg.batch_size - 1) // cfg.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    acc = 0.0
    for epoch in range(cfg.epochs):
        model.train()
        t0, total = time.time(), 0.0
        order = torch.from_numpy(rng.permutation(len(labels)))
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(shifted(images[idx], cfg.shift, rng))[0], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = float((predict(model, test_set.images) == test_set.labels).mean())
        print(
            f"epoch {epoch + 1}/{cfg.epochs} loss {total / steps_per_epoch:.4f} "
            f"test_acc {acc:.4f} ({time.time() - t0:.0f}s)",
            flush=True,
        )
    return acc


def shifted(x: torch.Tensor, shift: int, rng: np.random.Generator) -> torch.Tensor:
    """Each image moved by its own random (dy, dx) in [-shift, shift], edges replicated."""
    if shift == 0:
        return x
    size = x.shape[-1]
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    offsets = rng.integers(0, 2 * shift + 1, size=(len(x), 2))
    crops = [p[:, dy : dy + size, dx : dx + size] for p, (dy, dx) in zip(padded, offsets, strict=True)]
    return torch.stack(crops)


def export_onnx(model: nn.Module, path: Path) -> None:
    """ONNX with outputs `logits` and `features`, dynamic batch; checked against torch."""
    import onnx
    import onnxruntime as ort

    model.eval()
    cfg: ClassifierConfig = model.cfg  # type: ignore[assignment]
    dummy = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but exact for this plain CNN, and needs no onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[LOGITS_NAME, FEATURES_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, LOGITS_NAME: {0: "batch"}, FEATURES_NAME: {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.rand(5, cfg.channels, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        logits, feats = model(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    o_logits, o_feats = sess.run([LOGITS_NAME, FEATURES_NAME], {INPUT_NAME: x.numpy()})
    np.testing.assert_allclose(o_logits, logits.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(o_feats, feats.numpy(), rtol=1e-3, atol=1e-4)


def dataset_key(dataset: str, data_dir: Path | None) -> str:
    """The name manifests use: `mnist`, `fashion`, or the image folder's name (e.g. `emoji`)."""
    return Path(data_dir).name if dataset == "imagefolder" and data_dir is not None else dataset


def write_manifest(out_dir: Path, info: dict) -> Path:
    return ClassifierManifest.model_validate(info).write(out_dir)


def output_dir(out: Path, key: str, name: str) -> Path:
    """classifiers/<dataset>/ for the first reference, classifiers/<dataset>/<name>/ otherwise."""
    return (out / key / REFERENCE_CLASSIFIERS.get(name, name)).resolve()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.classifier",
        description="Train a reference classifier (the quality metrics' feature extractor) and export it.",
    )
    p.add_argument("--dataset", required=True, choices=["mnist", "fashion", "imagefolder"])
    p.add_argument("--data-dir", type=Path, default=None,
                   help="IDX root ($IMAGEGEN_DATA_DIR by default); for imagefolder, the folder itself")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--width", type=int, default=ClassifierConfig.width)
    p.add_argument("--arch", choices=ARCHITECTURES, default=ClassifierConfig.arch)
    p.add_argument("--shift", type=int, default=TrainConfig.shift,
                   help="augmentation: random shifts of up to this many pixels")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--name", default="cnn",
                   help="its name: `cnn` writes <out>/<dataset>/, others <out>/<dataset>/<name>/")
    p.add_argument("--role", choices=["reference", "selection"], default="reference",
                   help="reference: its figures are reported; selection: only checkpoint selection uses it")
    p.add_argument("--out", type=Path, default=Path("classifiers"),
                   help="writes <out>/<dataset>/[<name>/]model.onnx and manifest.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        train_set, test_set, test_split = load_splits(args.dataset, args.data_dir)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    channels, height, width = train_set.shape
    model_cfg = ClassifierConfig(
        channels=channels, image_size=height, num_classes=train_set.num_classes, width=args.width,
        arch=args.arch,
    )
    train_cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads,
        shift=args.shift,
    )
    key = dataset_key(args.dataset, args.data_dir)
    print(f"{key}: train {len(train_set)}, {test_split} {len(test_set)}, {model_cfg}", flush=True)
    t0 = time.time()
    torch.manual_seed(train_cfg.seed)  # the initial weights too
    model = build_classifier(model_cfg)
    acc = train(model, train_set, test_set, train_cfg)
    out_dir = output_dir(args.out, key, args.name)
    export_onnx(model, out_dir / CLASSIFIER_MODEL_NAME)
    info = {
        "dataset": key,
        "name": args.name,
        "role": args.role,
        "loader": args.dataset,
        "image": {"channels": channels, "height": height, "width": width},
        "num_classes": train_set.num_classes,
        "class_names": train_set.class_names,
        "test_accuracy": round(acc, 4),
        "test_split": test_split,
        "holdout": (
            {"fraction": HOLDOUT_FRACTION, "seed": HOLDOUT_SEED} if args.dataset == "imagefolder" else None
        ),
        "train_images": len(train_set),
        "test_images": len(test_set),
        "onnx": {
            "file": CLASSIFIER_MODEL_NAME, "sha256": sha256_file(out_dir / CLASSIFIER_MODEL_NAME), "opset": 17
        },
        "input": INPUT_NAME,
        "input_range": "[0, 1] float32, NCHW",
        "logits_output": LOGITS_NAME,
        "features_output": FEATURES_NAME,
        "feature_dim": model_cfg.feature_dim,
        "model_config": asdict(model_cfg),
        "training": {
            **asdict(train_cfg),
            "duration_s": round(time.time() - t0, 1),
            "device": "cpu",
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "augmentation": f"random shifts of up to {train_cfg.shift} px" if train_cfg.shift else "none",
        },
    }
    write_manifest(out_dir, info)
    print(f"wrote {out_dir} (test accuracy {acc:.4f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
