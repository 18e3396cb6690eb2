"""The IDX datasets (docs/design.md, "The four model families"): the name a run and a model id
use, the folder under the data root that holds the standard IDX files, and the class names in
label order. Training reads its data by this table; evaluation and the classifiers name the same
datasets. Any folder of images (`imagefolder`) is the third kind; its classes are its folders."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdxDataset:
    name: str  # `--dataset mnist`, and the dataset part of `gan-mnist`
    folder: str  # <data-dir>/<folder>/train-images-idx3-ubyte[.gz], ...
    class_names: tuple[str, ...]  # label i is class_names[i]


IDX_DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset("mnist", "mnist", tuple(str(digit) for digit in range(10))),
    "fashion": IdxDataset(
        "fashion",
        "fashion-mnist",
        (
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),  # fmt: skip
    ),
}
IMAGE_FOLDER = "imagefolder"
DATASET_KINDS: tuple[str, ...] = (*IDX_DATASETS, IMAGE_FOLDER)  # what `imagegen train --dataset` takes
