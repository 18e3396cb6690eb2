"""Dataset loaders on the committed real subsets (tests/data) and their errors."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from training.data import (
    DatasetError,
    load_dataset,
    load_idx_dataset,
    load_image_folder,
    split_holdout,
)


@pytest.mark.parametrize("name", ["mnist", "fashion"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_subset_shapes_ranges_and_label_counts(data_dir, name, split):
    ds = load_idx_dataset(name, data_dir, split)
    assert ds.images.shape == (300, 1, 28, 28)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert np.bincount(ds.labels, minlength=10).tolist() == [30] * 10
    assert ds.num_classes == 10 and len(ds.class_names) == 10
    floats = ds.as_float()
    assert floats.dtype == np.float32 and 0.0 <= floats.min() and floats.max() <= 1.0


def test_fashion_class_names_are_the_zalando_names(data_dir):
    ds = load_dataset("fashion", data_dir)
    assert ds.class_names[8] == "Bag" and ds.class_names[9] == "Ankle boot"


def test_missing_file_names_the_path_and_layout(tmp_path):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(DatasetError) as err:
        load_idx_dataset("mnist", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "expected" in message


def test_corrupt_gzip_names_the_file(tmp_path, data_dir):
    folder = tmp_path / "mnist"
    shutil.copytree(data_dir / "mnist", folder)
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(b"this is not gzip data")
    with pytest.raises(DatasetError, match="cannot read .*train-images-idx3-ubyte.gz"):
        load_idx_dataset("mnist", tmp_path)


def test_truncated_idx_is_reported_with_its_path(tmp_path, data_dir):
    folder = tmp_path / "mnist"
    shutil.copytree(data_dir / "mnist", folder)
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DatasetError, match="truncated or corrupt") as err:
        load_idx_dataset("mnist", tmp_path)
    assert "train-images-idx3-ubyte" in str(err.value)


def test_unknown_dataset_and_split_are_refused(data_dir):
    with pytest.raises(DatasetError, match="unknown IDX dataset"):
        load_idx_dataset("cifar", data_dir)
    with pytest.raises(DatasetError, match="unknown split"):
        load_idx_dataset("mnist", data_dir, "valid")


def test_image_folder_emoji_classes_from_sub_folders(emoji_dir):
    ds = load_image_folder(emoji_dir)
    assert ds.images.shape == (54, 3, 64, 64) and ds.images.dtype == np.uint8
    assert ds.name == "emoji"
    assert ds.num_classes == 9 and ds.class_names == sorted(ds.class_names)
    assert np.bincount(ds.labels).tolist() == [6] * 9  # 3 per set, two sets merged


def test_image_folder_with_one_folder_is_one_class(tmp_path, emoji_dir):
    for png in list((emoji_dir / "noto" / "flags").glob("*.png")):
        shutil.copy(png, tmp_path / png.name)
    ds = load_image_folder(tmp_path, image_size=32, name="flags")
    assert ds.images.shape == (3, 3, 32, 32)
    assert ds.class_names == [tmp_path.name] and ds.name == "flags"
    assert set(ds.labels.tolist()) == {0}


def test_corrupt_image_names_the_path(tmp_path, emoji_dir):
    shutil.copytree(emoji_dir / "noto" / "flags", tmp_path / "flags")
    bad = tmp_path / "flags" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="cannot read image .*broken.png"):
        load_image_folder(tmp_path)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(tmp_path)
    with pytest.raises(DatasetError, match="needs --data-dir"):
        load_dataset("imagefolder", None)


def test_split_holdout_is_stratified_and_deterministic(emoji_dir):
    ds = load_image_folder(emoji_dir)
    train_a, held_a = split_holdout(ds, 0.5, seed=3)
    train_b, held_b = split_holdout(ds, 0.5, seed=3)
    assert np.bincount(held_a.labels).tolist() == [3] * 9
    assert len(train_a) + len(held_a) == len(ds)
    assert np.array_equal(held_a.images, held_b.images) and np.array_equal(train_a.labels, train_b.labels)
