"""One classifier's figures of a set of generated images, and the figures held to the lower
(worse) of several classifiers. Torch-free; the maths is in `training.metrics`.

Per classifier (`figures`):

- `class_accuracy` (conditional models): share of images of class c the classifier calls c,
  overall and per class (`class_accuracy_per_class`, `worst_class`, `worst_class_accuracy`);
  unconditional models get `class_histogram` and `class_entropy_bits` instead;
- `fid_cls`: Frechet distance between generated and reference images in the classifier's
  penultimate features; `fid_cls_floor`: the same between real train images and the reference;
- `precision`, `recall`: k-NN manifolds, k=3, same features (Kynkaanniemi et al. 2019), with
  real train images measured the same way as `*_floor`;
- `diversity_ratio`: within-class diversity, per class the generated images' spread (RMS
  distance between two images of the class, `metrics.within_class_spread`) over the reference
  images' spread, averaged over classes; `least_diverse_class` names the smallest ratio;
  `diversity_ratio_floor`: real train images measured the same way (about 1). Classes are the
  asked-for ones for conditional models, the classifier's for unconditional ones;
- `*_matched` (image folders, conditional models): fid_cls and precision/recall against the
  generated images drawn in the reference's class proportions.

`hold_lower` keeps, figure by figure, the worse of the classifiers' values: the lowest accuracy,
precision, recall and diversity, the fid_cls furthest above its own floor (fid_cls / floor; the
two feature spaces have different scales), each with the floor and class name of the classifier
it came from, and `held_by` naming that classifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training import metrics
from training.reference import PR_K, Reference

# figure -> the fields that travel with it from the same classifier
HIGHER_IS_BETTER = {
    "class_accuracy": ("class_accuracy",),
    "worst_class_accuracy": ("worst_class_accuracy", "worst_class"),
    "precision": ("precision", "precision_floor"),
    "recall": ("recall", "recall_floor"),
    "precision_matched": ("precision_matched",),
    "recall_matched": ("recall_matched",),
    "diversity_ratio": ("diversity_ratio", "diversity_ratio_floor"),
    "least_diverse_class_ratio": ("least_diverse_class_ratio", "least_diverse_class"),
    "class_entropy_bits": ("class_entropy_bits", "class_histogram", "class_entropy_max_bits"),
}
LOWER_IS_BETTER = {
    "fid_cls": ("fid_cls", "fid_cls_floor"),
    "fid_cls_matched": ("fid_cls_matched",),
}


def figures(
    predicted: np.ndarray, feats: np.ndarray, labels: np.ndarray, conditional: bool,
    class_names: list[str], reference: Reference,
) -> dict[str, Any]:
    """One classifier's figures of generated images (its predictions and features of them;
    `labels`: the classes asked for)."""
    n = len(reference.features)
    fake = feats[:n]  # labels cycle, so the first n stay balanced over classes
    precision, recall = metrics.precision_recall(reference.features, fake, PR_K)
    result: dict[str, Any] = {
        "fid_cls": round(metrics.frechet_distance(fake, reference.features), 4),
        "fid_cls_floor": round(reference.fid_floor, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "precision_floor": round(reference.precision_floor, 4),
        "recall_floor": round(reference.recall_floor, 4),
    }
    classes = labels if conditional else predicted
    result |= diversity(feats[:n], classes[:n], class_names, reference)
    if conditional:
        result |= class_matched_figures(labels, feats, reference)
        overall, per_class = metrics.class_accuracy(predicted, labels, len(class_names))
        worst = int(np.nanargmin(per_class))
        result |= {
            "class_accuracy": round(overall, 4),
            "class_accuracy_per_class": {class_names[c]: round(a, 4) for c, a in enumerate(per_class)},
            "worst_class": class_names[worst],
            "worst_class_accuracy": round(per_class[worst], 4),
        }
    else:
        hist, entropy = metrics.class_histogram(predicted, len(class_names))
        result |= {
            "class_histogram": {class_names[c]: round(p, 4) for c, p in enumerate(hist)},
            "class_entropy_bits": round(entropy, 4),
            "class_entropy_max_bits": round(float(np.log2(len(class_names))), 4),
        }
    return result


def diversity(
    feats: np.ndarray, classes: np.ndarray, class_names: list[str], reference: Reference
) -> dict[str, Any]:
    """Within-class diversity against the reference's; empty when no class has two images on
    both sides (a tiny reference)."""
    k = len(class_names)
    real = metrics.within_class_spread(reference.features, reference.labels, k)
    ratios = np.array(metrics.within_class_spread(feats, classes, k)) / np.array(real)
    floors = np.array(metrics.within_class_spread(reference.floor_features, reference.floor_labels, k)) / real
    if not np.isfinite(ratios).any():
        return {}
    least = int(np.nanargmin(ratios))
    return {
        "diversity_ratio": round(float(np.nanmean(ratios)), 4),
        "diversity_ratio_floor": round(float(np.nanmean(floors)), 4) if np.isfinite(floors).any() else None,
        "least_diverse_class": class_names[least],
        "least_diverse_class_ratio": round(float(ratios[least]), 4),
    }


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


def class_matched_figures(labels: np.ndarray, feats: np.ndarray, reference: Reference) -> dict[str, Any]:
    """fid_cls and precision/recall against samples drawn in the reference's class proportions,
    so that an imbalanced held-out split (emoji: 60% people-body) does not count against a
    model for drawing the classes it is asked for."""
    idx = class_matched(labels, reference.labels) if reference.imbalanced else None
    if idx is None:
        return {}
    precision, recall = metrics.precision_recall(reference.features, feats[idx], PR_K)
    return {
        "fid_cls_matched": round(metrics.frechet_distance(feats[idx], reference.features), 4),
        "precision_matched": round(precision, 4),
        "recall_matched": round(recall, 4),
    }


def hold_lower(by_classifier: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the worse classifier's value of each figure, with what travels with it; which
    classifier each figure was held to)."""
    held: dict[str, Any] = {}
    held_by: dict[str, str] = {}
    for key, fields in (*HIGHER_IS_BETTER.items(), *LOWER_IS_BETTER.items()):
        having = {name: f for name, f in by_classifier.items() if f.get(key) is not None}
        if not having:
            continue
        if key in HIGHER_IS_BETTER:
            name = min(having, key=lambda c: having[c][key])
        else:  # relative to each classifier's own floor (fid_cls_matched: to fid_cls's floor)
            name = max(having, key=lambda c: having[c][key] / max(having[c]["fid_cls_floor"], 1e-9))
        held |= {f: having[name].get(f) for f in fields}
        held_by[key] = name
    per_class = [f["class_accuracy_per_class"] for f in by_classifier.values()
                 if f.get("class_accuracy_per_class")]
    if per_class:
        held["class_accuracy_per_class"] = {c: min(p[c] for p in per_class) for c in per_class[0]}
    return {k: v for k, v in held.items() if v is not None}, held_by
