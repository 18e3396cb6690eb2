"""Reference classifiers: the feature extractor of the quality metrics (DESIGN.md, "Quality metrics").

No pretrained Inception weights can be had here, so each dataset gets a small CNN of its own,
trained on the train split only (image folders: on `split_holdout`'s train part), exported to
ONNX with two outputs, `logits` and `features` (the penultimate layer), and kept in the
repository beside a manifest:

    classifiers/<dataset>/model.onnx
    classifiers/<dataset>/manifest.json

They live outside `models/` on purpose: the service loads everything under `models/`.
Evaluation (`training.evaluate`) runs them through onnxruntime, so it needs no retraining.

    python -m training.classifier --dataset mnist --data-dir /work/shared/data --epochs 6 --out classifiers/
    python -m training.classifier --dataset fashion --data-dir /work/shared/data --epochs 8 --out classifiers/
    python -m training.classifier --dataset imagefolder --data-dir /work/shared/data/emoji --epochs 10 \
        --out classifiers/
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

from imagegen.contract.classifier import ClassifierManifest
from imagegen.contract.manifest import sha256_file
from training.data import DatasetError, ImageDataset, load_dataset, split_holdout
from training.evaluate import (
    CLASSIFIER_MANIFEST,
    CLASSIFIER_MODEL,
    FEATURES_NAME,
    HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    INPUT_NAME,
    LOGITS_NAME,
)

MODEL_FILE = CLASSIFIER_MODEL
MANIFEST_FILE = CLASSIFIER_MANIFEST


@dataclass(frozen=True)
class ClassifierConfig:
    """The network: conv stages (conv-BN-ReLU, conv-BN-ReLU, 2x2 max-pool) down to <= 7 pixels."""

    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    width: int = 16  # channels of the first stage, doubled per stage up to 4x
    feature_dim: int = 128  # size of the penultimate layer: the space FID and precision/recall use
    dropout: float = 0.3

    def stage_widths(self) -> list[int]:
        widths, size, w = [], self.image_size, self.width
        while size > 7:
            widths.append(w)
            size //= 2
            w = min(w * 2, self.width * 4)
        return widths


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    threads: int = 1  # the CPU is shared; one thread keeps training polite


class Classifier(nn.Module):
    """Images in [0, 1], NCHW -> (logits, features). Normalisation is inside the net, so callers
    (and the ONNX graph) feed generator output as is."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in, size = cfg.channels, cfg.image_size
        for w in cfg.stage_widths():
            layers += [
                nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in, size = w, size // 2
        self.body = nn.Sequential(*layers)  # (B, c_in, size, size); 28 -> 7, 64 -> 4
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * size * size, cfg.feature_dim), nn.BatchNorm1d(cfg.feature_dim),
            nn.ReLU(inplace=True),
        )  # (B, feature_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - 0.5) / 0.5
        features = self.embed(self.body(x))
        return self.head(self.drop(features)), features


def load_splits(dataset: str, data_dir: Path | None) -> tuple[ImageDataset, ImageDataset, str]:
    """(train, test, name of the test split). Image folders have no test split: a stratified
    held-out part (fraction 0.2, seed 0) stands in for it, the same one evaluation uses."""
    if dataset == "imagefolder":
        full = load_dataset("imagefolder", data_dir)
        train, held = split_holdout(full, HOLDOUT_FRACTION, HOLDOUT_SEED)
        return train, held, f"held-out (split_holdout fraction={HOLDOUT_FRACTION}, seed={HOLDOUT_SEED})"
    return load_dataset(dataset, data_dir, "train"), load_dataset(dataset, data_dir, "test"), "test"


def predict(model: Classifier, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
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


def train(model: Classifier, train_set: ImageDataset, test_set: ImageDataset, cfg: TrainConfig) -> float:
    """Plain Adam + cosine schedule, no augmentation; returns the final test accuracy."""
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
            loss = F.cross_entropy(model(images[idx])[0], labels[idx])
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


def export_onnx(model: Classifier, path: Path) -> None:
    """ONNX with outputs `logits` and `features`, dynamic batch; checked against torch."""
    import onnx
    import onnxruntime as ort

    model.eval()
    cfg = model.cfg
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


def read_manifest(out_dir: Path) -> ClassifierManifest:
    return ClassifierManifest.read(Path(out_dir))


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
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--out", type=Path, default=Path("classifiers"),
                   help="writes <out>/<dataset>/model.onnx and manifest.json")
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
        channels=channels, image_size=height, num_classes=train_set.num_classes, width=args.width
    )
    train_cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads
    )
    key = dataset_key(args.dataset, args.data_dir)
    print(f"{key}: train {len(train_set)}, {test_split} {len(test_set)}, {model_cfg}", flush=True)
    t0 = time.time()
    model = Classifier(model_cfg)
    acc = train(model, train_set, test_set, train_cfg)
    out_dir = args.out / key
    export_onnx(model, out_dir / MODEL_FILE)
    info = {
        "dataset": key,
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
        "onnx": {"file": MODEL_FILE, "sha256": sha256_file(out_dir / MODEL_FILE), "opset": 17},
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
            "augmentation": "none",
        },
    }
    write_manifest(out_dir, info)
    print(f"wrote {out_dir} (test accuracy {acc:.4f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
