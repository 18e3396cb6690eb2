"""Datasets: MNIST and Fashion-MNIST from standard IDX files, and any folder of RGB images.

Everything here is numpy + Pillow (no torch), so evaluation and tests can use it too.
Images come back as uint8 arrays shaped (N, C, H, W); labels as int64 (N,).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from imagegen.contract.datasets import IDX_DATASETS, IMAGE_FOLDER

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
EXPECTED_LAYOUT = (
    f"expected {' and '.join(f'<data-dir>/{spec.folder}/' for spec in IDX_DATASETS.values())} holding "
    "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
)


WHERE_TO_GET = (
    "The four files of each come from MNIST (https://ossci-datasets.s3.amazonaws.com/mnist/, a mirror "
    "of yann.lecun.com/exdb/mnist; CC BY-SA 3.0) and Fashion-MNIST "
    "(http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/; MIT, Zalando Research); point "
    "--data-dir (or IMAGEGEN_DATA_DIR) at the folder holding mnist/ and fashion-mnist/. To try "
    "training first, the checkout's tests/data holds 300 real images a split: --data-dir tests/data"
)


class DatasetError(Exception):
    """A dataset is missing or unreadable; the message names the path and the expected layout."""


@dataclass
class ImageDataset:
    name: str
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        channels, height, width = self.images.shape[1:]
        return channels, height, width

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, pick: np.ndarray) -> ImageDataset:
        """The images (and labels) that `pick` (a mask or indices) selects."""
        return ImageDataset(self.name, self.images[pick], self.labels[pick], self.class_names)

    def as_float(self) -> np.ndarray:
        """Images as float32 in [0, 1]."""
        return self.images.astype(np.float32) / 255.0


def default_data_dir() -> Path:
    return Path(os.environ.get("IMAGEGEN_DATA_DIR", "data"))


def given_data_dir(arg: Path | None) -> Path | None:
    """`--data-dir`, else $IMAGEGEN_DATA_DIR, else None: measuring quality must not guess a folder."""
    if arg is not None:
        return arg
    return Path(os.environ["IMAGEGEN_DATA_DIR"]) if "IMAGEGEN_DATA_DIR" in os.environ else None


def _open_idx(path: Path) -> bytes:
    candidates = [path.with_name(path.name + ".gz"), path]
    for candidate in candidates:
        if candidate.exists():
            try:
                raw = candidate.read_bytes()
                return gzip.decompress(raw) if candidate.suffix == ".gz" else raw
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise DatasetError(f"cannot read {candidate}: {exc}; {EXPECTED_LAYOUT}") from exc
    missing = f"missing file {candidates[0]} (or {candidates[1].name})"
    raise DatasetError(f"{missing}; {EXPECTED_LAYOUT}. {WHERE_TO_GET}")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (ubyte data), gzip or raw; `path` is given without `.gz`."""
    raw = _open_idx(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic); {EXPECTED_LAYOUT}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) + header
    if len(raw) != expected:
        raise DatasetError(
            f"{path}: truncated or corrupt IDX file ({len(raw)} bytes, header says {expected}); "
            f"{EXPECTED_LAYOUT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_dataset(name: str, data_dir: Path | str | None = None, split: str = "train") -> ImageDataset:
    """MNIST (`mnist`) or Fashion-MNIST (`fashion`) from `<data_dir>/<folder>/`."""
    if name not in IDX_DATASETS:
        raise DatasetError(f"unknown IDX dataset {name!r}; known: {sorted(IDX_DATASETS)}")
    if split not in IDX_FILES:
        raise DatasetError(f"unknown split {split!r}; known: {sorted(IDX_FILES)}")
    spec = IDX_DATASETS[name]
    folder = Path(data_dir if data_dir is not None else default_data_dir()) / spec.folder
    images_file, labels_file = IDX_FILES[split]
    images = read_idx(folder / images_file)
    labels = read_idx(folder / labels_file).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not match; {EXPECTED_LAYOUT}"
        )
    return ImageDataset(name, images[:, None, :, :].copy(), labels, list(spec.class_names))


def _load_rgb(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as opened:
        opened.load()
        img: Image.Image = opened
        if img.mode in ("RGBA", "LA", "P"):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
        # Resize the short side to `size`, then centre-crop.
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def load_image_folder(root: Path | str, image_size: int = 64, name: str | None = None) -> ImageDataset:
    """Any folder of images. Classes are the names of the folders that hold the images
    (merged across sets, e.g. `emoji/<set>/<category>/`); one folder means one class."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} does not exist; expected a folder of PNG/JPEG images, "
            "optionally in one sub-folder per class"
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    parents = [p.parent for p in files]
    class_names = sorted({p.name for p in parents})
    if len(class_names) == 1:
        class_names = [root.name]
    index = {c: i for i, c in enumerate(class_names)}
    images, labels = [], []
    for path in files:
        try:
            images.append(_load_rgb(path, image_size))
        except OSError as exc:
            raise DatasetError(f"cannot read image {path}: {exc}") from exc
        labels.append(index.get(path.parent.name, 0))
    return ImageDataset(
        name or root.name, np.stack(images), np.asarray(labels, dtype=np.int64), class_names
    )


def load_dataset(
    name: str,
    data_dir: Path | str | None = None,
    split: str = "train",
    image_size: int = 64,
    dataset_name: str | None = None,
) -> ImageDataset:
    """`mnist`, `fashion`, or `imagefolder` (then `data_dir` is the folder itself)."""
    if name == IMAGE_FOLDER:
        if data_dir is None:
            raise DatasetError("the imagefolder dataset needs --data-dir pointing at a folder of images")
        return load_image_folder(data_dir, image_size, dataset_name)
    return load_idx_dataset(name, data_dir, split)


def split_holdout(
    ds: ImageDataset, fraction: float = 0.2, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """A deterministic, stratified train/held-out split (for image folders, which have no test split)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(ds), dtype=bool)
    for c in range(ds.num_classes):
        idx = np.flatnonzero(ds.labels == c)
        rng.shuffle(idx)
        held[idx[: int(round(len(idx) * fraction))]] = True
    return ds.subset(~held), ds.subset(held)
