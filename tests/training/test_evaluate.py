"""`imagegen evaluate` end to end: a shipped ONNX model, the shipped classifier, the committed
real test subsets as data, writing into a copy of the model folder (never the real manifest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagegen.contract.manifest import MANIFEST_NAME, Manifest
from training.evaluate import main
from training.figures import class_matched

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
CLASSIFIERS = ROOT / "classifiers"
TEST_DATA = ROOT / "tests" / "data"


def _shipped(dataset: str, conditional: bool = True) -> Path:
    """A shipped model of `dataset`: ours before the seed baseline, then the best class accuracy
    on record (the label check below is about the pipeline, not about one family's quality)."""
    candidates = []
    for path in sorted(MODELS.glob(f"*/{MANIFEST_NAME}")):
        manifest = Manifest.read(path.parent)
        if manifest.dataset == dataset and manifest.conditional == conditional:
            recorded = (manifest.metrics.class_accuracy or 0.0) if manifest.metrics else 0.0
            candidates.append((manifest.baseline, -recorded, manifest.id, path.parent))
    if not candidates:
        pytest.skip(f"no shipped {'conditional' if conditional else 'unconditional'} {dataset} model")
    return min(candidates)[3]


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(model_dir, models / model_dir.name)
    return models


def _evaluate(models: Path, model_id: str, samples: int = 200) -> int:
    return main([
        model_id, "--models-dir", str(models), "--classifiers-dir", str(CLASSIFIERS),
        "--data-dir", str(TEST_DATA), "--samples", str(samples), "--seed", "0",
    ])


def test_evaluate_writes_metrics_and_nothing_else(tmp_path):
    model_dir = _shipped("mnist")
    models = _copy(model_dir, tmp_path)
    before = json.loads((models / model_dir.name / MANIFEST_NAME).read_text())

    assert _evaluate(models, model_dir.name) == 0

    after = json.loads((models / model_dir.name / MANIFEST_NAME).read_text())
    m = after.pop("metrics")
    before.pop("metrics", None)
    assert after == before
    assert m["evaluation"]["samples"] == 200 and m["evaluation"]["seed"] == 0
    assert m["evaluation"]["fid_pr_samples"] == 200  # min(samples, 300 committed test images)
    # both reference classifiers measured it, each named with its file's digest
    for name, folder in (("cnn", CLASSIFIERS / "mnist"), ("resnet", CLASSIFIERS / "mnist" / "resnet")):
        clf = json.loads((folder / "manifest.json").read_text())
        assert m["evaluation"]["classifiers"][name] == {
            "dataset": "mnist", "sha256": clf["onnx"]["sha256"], "test_accuracy": clf["test_accuracy"],
            "name": name,
        }
    assert set(m["by_classifier"]) == {"cnn", "resnet"}
    for f in (m, *m["by_classifier"].values()):
        assert set(f["class_accuracy_per_class"]) == {str(d) for d in range(10)}
        # Labels reach the generator and the classifier in step: a shipped model draws mostly the
        # digits it is asked for (a misaligned pipeline scores about 0.1; the quality target is 0.97).
        assert f["class_accuracy"] >= 0.5
        assert f["worst_class_accuracy"] == min(f["class_accuracy_per_class"].values())
        assert 0 <= f["precision"] <= 1 and 0 <= f["recall"] <= 1
        assert f["fid_cls"] >= 0 and f["fid_cls_floor"] >= 0
        assert 0 <= f["diversity_ratio"] and 0 < f["diversity_ratio_floor"]
        assert "fid_cls_matched" not in f  # an IDX test split is balanced: nothing to match
    # the reported figures are held to the lower of the two classifiers
    figs = m["by_classifier"].values()
    for key in ("class_accuracy", "worst_class_accuracy", "precision", "recall", "diversity_ratio"):
        assert m[key] == min(f[key] for f in figs)
        assert m[key] == m["by_classifier"][m["held_by"][key]][key]


def test_evaluate_is_deterministic(tmp_path):
    model_dir = _shipped("mnist")
    results = []
    for run in ("a", "b"):
        models = _copy(model_dir, tmp_path / run)
        assert _evaluate(models, model_dir.name, samples=100) == 0
        m = Manifest.read(models / model_dir.name).metrics
        results.append(m.model_dump(exclude={"evaluation"}))
    assert results[0] == results[1]


def test_evaluate_an_emoji_model_on_the_committed_emoji_images(tmp_path):
    model_dir = _shipped("emoji")
    models = _copy(model_dir, tmp_path)
    assert _evaluate(models, model_dir.name, samples=90) == 0
    m = Manifest.read(models / model_dir.name).metrics.model_dump(exclude_none=True)
    # 54 images, 6 per category: the held-out part is 1 per category, the sets compared are 9.
    assert m["evaluation"]["fid_pr_samples"] == 9
    assert "held-out" in m["evaluation"]["reference"]
    for f in (m, m["by_classifier"]["cnn"], m["by_classifier"]["resnet"]):
        assert len(f["class_accuracy_per_class"]) == 9
        # the held-out images' classes are known here: the class-matched figures are written too
        assert {"fid_cls_matched", "precision_matched", "recall_matched"} <= set(f)
        assert f["fid_cls_matched"] >= 0 and 0 <= f["recall_matched"] <= 1
        assert "diversity_ratio" not in f  # one held-out image per category: no pair to measure


def test_class_matched_samples_follow_the_reference_histogram():
    generated = np.arange(90) % 9  # the sampling contract: image i asks for class i mod 9
    reference = np.array([5] * 6 + [0, 0, 3])  # imbalanced, like the emoji held-out split
    idx = class_matched(generated, reference)
    assert np.array_equal(np.bincount(generated[idx], minlength=9), np.bincount(reference, minlength=9))
    assert list(idx) == [0, 3, 5, 9, 14, 23, 32, 41, 50]  # the first images of each class
    assert class_matched(generated, np.array([5] * 11)) is None  # only 10 generated of class 5


def test_evaluate_reports_an_unknown_model(tmp_path, capsys):
    models = _copy(_shipped("mnist"), tmp_path)
    assert _evaluate(models, "no-such-model") == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "known:" in err


def test_evaluate_reports_a_missing_classifier(tmp_path, capsys):
    model_dir = _shipped("mnist")
    models = _copy(model_dir, tmp_path)
    code = main([model_dir.name, "--models-dir", str(models), "--classifiers-dir", str(tmp_path / "none"),
                 "--data-dir", str(TEST_DATA), "--samples", "50"])
    assert code == 2
    assert "no reference classifier" in capsys.readouterr().err


def test_selection_ranks_candidates_by_the_selection_classifier_only(tmp_path, capsys):
    """Shipped MNIST models and a version's training weights, ranked on selection seeds; no
    reference classifier is read (the classifiers folder holds only the selection one)."""
    from training.selection import main as select

    only_select = tmp_path / "classifiers" / "mnist"
    shutil.copytree(CLASSIFIERS / "mnist" / "select", only_select / "select")
    label, served = MODELS / "label-mnist", MODELS / "evaluator-mnist"
    weights = served / str(Manifest.read(served).version)  # its training.safetensors, exported anew
    argv = [str(label), str(served), str(weights), "--classifiers-dir", str(tmp_path / "classifiers"),
            "--data-dir", str(TEST_DATA), "--samples", "100", "--by", "recall"]
    assert select(argv) == 0
    out = capsys.readouterr().out
    assert "seeds 1,000,000..1,000,099" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(str(MODELS))}
    assert len(rows) == 3
    # the served file and the weights it was exported from measure the same
    assert rows[str(served)] == rows[str(weights)]
    # one picture per class (label) covers fewer real images than a sampler: it ranks last by recall
    assert out.strip().splitlines()[-1].startswith(str(label))


def test_selection_refuses_the_reported_seeds(tmp_path, capsys):
    from training.selection import main as select

    argv = [str(MODELS / "label-mnist"), "--data-dir", str(TEST_DATA), "--seed", "0"]
    assert select(argv) == 2
    assert "kept for reported figures" in capsys.readouterr().err
