"""What a training run is: `RunConfig`, every setting of a run that is not the model's own
hyper-parameters, each field declared once with its `imagegen train` option (cli_help.option),
and the defaults that depend on other settings (`resolved`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagegen.contract.datasets import DATASET_KINDS, IMAGE_FOLDER
from imagegen.contract.families import FAMILIES
from imagegen.contract.manifest import default_model_id
from training.cli_help import option
from training.data import default_data_dir
from training.families.evaluator import GUIDANCES


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything about a run that is not the model's own hyper-parameters (those are the
    family's config: `overrides` changes its fields)."""

    family: str = option(help="model family to train", choices=sorted(FAMILIES))
    dataset: str = option(
        help="IDX set (mnist, fashion) or a folder of images with one subfolder per class",
        choices=DATASET_KINDS,
    )
    epochs: int = option(help="epochs to reach (counted from the start on --resume)")
    data_dir: str = option(
        "", help="IDX root (default $IMAGEGEN_DATA_DIR or data); for imagefolder the image folder itself"
    )
    dataset_name: str = option(
        "", flag="--name", help="dataset name in the model id (default the dataset, or the folder's name)"
    )
    image_size: int = option(64, help="image folders only (IDX sets are 28x28)")
    batch_size: int = option(128, help="images per optimiser step (the global batch under --ddp)")
    seed: int = option(0, help="seeds the weights, the data order and the noise")
    device: str = option("auto", choices=("auto", "cpu", "cuda"), help="auto = cuda if present")
    threads: int = option(0, help="torch CPU threads (0 = torch's default)")
    variant: str = option(
        "default",
        choices=("default", "seed"),
        help="the family's tuned configuration, or the seed project's original one",
    )
    # NHWC tensors for the nets and batches: 1.7x faster convolutions on this AVX2 CPU
    channels_last: bool = option(False, help="NHWC tensors (faster convs on CPU)")
    guidance: str = option(
        "",
        choices=("", *GUIDANCES),
        help="evaluator: energy (EBGAN, default) or reference (the seed's scheme)",
    )
    # a seeded subset: seed baselines on a budget
    max_samples: int = option(0, help="train on a seeded subset of this size (0 = all images)")
    balance_classes: bool = option(
        False, help="draw each class equally often per epoch (for folders where one class dominates)"
    )
    # an exported model whose training weights and progress start the run
    resume_from: str = option(
        "",
        metavar="MODEL",
        help="continue an exported model (models/<id> or models/<id>/<version>) from the training "
        "weights kept beside it, on this dataset: more epochs, or fine-tuning on new images",
    )
    overrides: dict[str, Any] = option(
        {},
        flag="--set",
        metavar="KEY=VALUE",
        repeat=True,
        help="override a model config field, e.g. --set g_width=8 (repeatable)",
    )
    out: str = option("", help="run directory (default runs/<family>-<dataset>[-seed])")
    # batch_size stays the global batch, split evenly among the processes (training/distributed.py)
    ddp: bool = option(
        False,
        help="data-parallel across the processes torchrun starts (gloo on CPU, nccl on GPUs); "
        "--batch-size is the global batch: torchrun --nproc-per-node 2 -m imagegen.cli train ... --ddp",
    )

    @property
    def model_id(self) -> str:
        return default_model_id(self.family, self.dataset_name or self.dataset, self.variant)


def resolved(run: RunConfig) -> RunConfig:
    """The defaults the command line fills from other settings: the data root
    ($IMAGEGEN_DATA_DIR or data), the dataset's name (the image folder's), the variant (the
    seed's guidance is the seed variant) and the run directory (runs/<model id>)."""
    data_dir = run.data_dir or str(default_data_dir())
    name = run.dataset_name or (Path(data_dir).name if run.dataset == IMAGE_FOLDER else run.dataset)
    variant = "seed" if run.guidance == "reference" else run.variant
    run = dataclasses.replace(run, data_dir=data_dir, dataset_name=name, variant=variant)
    return dataclasses.replace(run, out=run.out or f"runs/{run.model_id}")
