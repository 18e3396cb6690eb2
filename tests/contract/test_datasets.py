"""The IDX dataset table: one entry per `--dataset` name, the folder of the standard layout, and
ten class names in label order (what a manifest's classes and the classifiers repeat)."""

from __future__ import annotations

from imagegen.contract.datasets import DATASET_KINDS, IDX_DATASETS, IMAGE_FOLDER


def test_each_idx_dataset_is_keyed_by_its_own_name_with_ten_distinct_classes() -> None:
    assert set(IDX_DATASETS) == {"mnist", "fashion"}
    for key, spec in IDX_DATASETS.items():
        assert spec.name == key
        assert len(spec.class_names) == 10 and len(set(spec.class_names)) == 10


def test_the_folders_are_the_standard_layout() -> None:
    assert {key: spec.folder for key, spec in IDX_DATASETS.items()} == {
        "mnist": "mnist",
        "fashion": "fashion-mnist",
    }
    assert IDX_DATASETS["mnist"].class_names[:3] == ("0", "1", "2")
    assert IDX_DATASETS["fashion"].class_names[0] == "T-shirt/top"


def test_the_dataset_kinds_are_the_idx_sets_and_image_folders() -> None:
    assert DATASET_KINDS == ("mnist", "fashion", IMAGE_FOLDER)
